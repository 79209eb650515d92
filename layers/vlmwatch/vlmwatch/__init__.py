"""vlmwatch: S3 uploads become VLM Run agent executions, tracked in DynamoDB, delivered to S3."""

__version__ = "0.1.0"
