"""Lambda-backed CloudFormation custom resources for LocalStack Community (see ../README.md)."""

RESOURCE_TYPE = "AWS::CloudFormation::CustomResource"
