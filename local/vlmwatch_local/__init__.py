"""The local stack: a VLM Run emulator, moto provisioning from template.yaml, and event-source loops."""
