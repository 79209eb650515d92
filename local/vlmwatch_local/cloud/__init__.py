"""The local cloud: what ``template.yaml`` declares, provisioned on moto, and the loops that play AWS."""
