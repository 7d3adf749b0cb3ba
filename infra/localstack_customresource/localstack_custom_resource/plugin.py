"""plux plugin in LocalStack's ``localstack.cloudformation.resource_providers`` namespace.

LocalStack maps every ``Custom::*`` type to ``AWS::CloudFormation::CustomResource`` and loads the
provider plugin of that name; Community ships none, so without this one such resources are
skipped ("No resource provider found") and their Lambda is never called.
"""

from localstack.services.cloudformation.resource_provider import (
    CloudFormationResourceProviderPlugin,
    ResourceProvider,
)

from localstack_custom_resource import RESOURCE_TYPE


class CustomResourceProviderPlugin(CloudFormationResourceProviderPlugin):
    name = RESOURCE_TYPE

    def __init__(self):
        self.factory: type[ResourceProvider] | None = None

    def load(self):
        from localstack_custom_resource.provider import CustomResourceProvider

        self.factory = CustomResourceProvider
