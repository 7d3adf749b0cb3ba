"""The provider: call the ServiceToken Lambda with the cfn-response protocol, as CloudFormation does.

For Create / Update / Delete of a ``Custom::*`` (or ``AWS::CloudFormation::CustomResource``)
resource:

1. a pre-signed S3 PUT URL is made in a bucket of the stack's account (``ResponseURL``), like
   CloudFormation's own;
2. the function named by ``ServiceToken`` (a Lambda ARN; SNS tokens are not supported) is invoked
   with the standard request document (RequestType, ResponseURL, StackId, RequestId, ResourceType,
   LogicalResourceId, ResourceProperties, OldResourceProperties, PhysicalResourceId). The call is
   synchronous so that a crash is reported at once instead of after a timeout;
3. the response the function PUT to that URL is read back (polled until
   ``LOCALSTACK_CUSTOM_RESOURCE_TIMEOUT`` seconds, default 300): ``SUCCESS`` completes the
   resource (``Data`` keys become ``Fn::GetAtt`` attributes), ``FAILED`` fails it with ``Reason``
   and the stack rolls back.

Differences from AWS: the physical id sent with Update/Delete is ``<stack>-<logical id>`` unless
the function returned one on Create in this LocalStack session; a different id returned on Update
does not trigger a replacement (no Delete of the old one).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import ClassVar

from localstack.services.cloudformation.resource_provider import (
    OperationStatus,
    ProgressEvent,
    ResourceProvider,
    ResourceRequest,
)

from localstack_custom_resource import RESOURCE_TYPE

LOG = logging.getLogger(__name__)
BUCKET_PREFIX = "localstack-cfn-custom-resource-responses"
POLL_SECONDS = 0.25
# Physical ids returned by functions, by (stack, logical id), for later Update/Delete requests.
_PHYSICAL_IDS: dict[tuple[str, str], str] = {}


def _timeout() -> float:
    try:
        return float(os.environ.get("LOCALSTACK_CUSTOM_RESOURCE_TIMEOUT", "300"))
    except ValueError:
        return 300.0


class CustomResourceProvider(ResourceProvider[dict]):
    SCHEMA: ClassVar[dict] = {
        "typeName": RESOURCE_TYPE,
        "description": "Lambda-backed custom resource (cfn-response protocol)",
        "additionalProperties": True,
        "properties": {
            "ServiceToken": {"type": "string"},
            "PhysicalResourceId": {"type": "string"},
        },
        "required": ["ServiceToken"],
        "readOnlyProperties": ["/properties/PhysicalResourceId"],
        "primaryIdentifier": ["/properties/PhysicalResourceId"],
    }

    def create(self, request: ResourceRequest[dict]) -> ProgressEvent[dict]:
        return self._call(request, "Create")

    def update(self, request: ResourceRequest[dict]) -> ProgressEvent[dict]:
        return self._call(request, "Update")

    def delete(self, request: ResourceRequest[dict]) -> ProgressEvent[dict]:
        return self._call(request, "Delete")

    def read(self, request: ResourceRequest[dict]) -> ProgressEvent[dict]:
        raise NotImplementedError

    # ------------------------------------------------------------------

    def _call(self, request: ResourceRequest[dict], request_type: str) -> ProgressEvent[dict]:
        props = dict(request.desired_state or {})
        key = (request.stack_name, request.logical_resource_id)
        token = props.get("ServiceToken")
        if not isinstance(token, str) or ":lambda:" not in token:
            return self._failed(f"ServiceToken must be a Lambda function ARN, got {token!r}")

        s3 = request.aws_client_factory.s3
        bucket = f"{BUCKET_PREFIX}-{request.account_id}-{request.region_name}"
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - missing: create it
            params = {"Bucket": bucket}
            if request.region_name != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": request.region_name}
            s3.create_bucket(**params)
        request_id = str(uuid.uuid4())
        object_key = f"{request.stack_name}/{request.logical_resource_id}/{request_id}"
        response_url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": object_key}, ExpiresIn=int(_timeout()) + 3600
        )

        event = {
            "RequestType": request_type,
            "ServiceToken": token,
            "ResponseURL": response_url,
            "StackId": request.stack_id,
            "RequestId": request_id,
            "ResourceType": request.resource_type,
            "LogicalResourceId": request.logical_resource_id,
            "ResourceProperties": {k: v for k, v in props.items() if k != "PhysicalResourceId"},
        }
        if request_type in ("Update", "Delete"):
            event["PhysicalResourceId"] = _PHYSICAL_IDS.get(key) or f"{request.stack_name}-{request.logical_resource_id}"
        if request_type == "Update" and request.previous_state is not None:
            event["OldResourceProperties"] = {
                k: v for k, v in dict(request.previous_state).items() if k != "PhysicalResourceId"
            }

        LOG.info("custom resource %s: %s via %s", request.logical_resource_id, request_type, token)
        try:
            result = request.aws_client_factory.lambda_.invoke(
                FunctionName=token, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
            )
        except Exception as exc:  # noqa: BLE001 - report any invoke failure as the resource's failure
            return self._failed(f"invoking {token} failed: {exc}")
        if result.get("FunctionError"):
            payload = result["Payload"].read().decode("utf-8", "replace")
            # A function that crashed may still have answered first (cfn-response before raising).
            answer = self._read_answer(s3, bucket, object_key, deadline=time.monotonic() + 1.0)
            if answer is None:
                return self._failed(f"{token} failed without answering: {payload[:1000]}")
        else:
            answer = self._read_answer(s3, bucket, object_key, deadline=time.monotonic() + _timeout())
            if answer is None:
                return self._failed(f"no response from {token} within {_timeout():.0f} s")

        status = answer.get("Status")
        reason = str(answer.get("Reason") or "")
        if status != "SUCCESS":
            if request_type == "Delete":
                LOG.warning("custom resource %s: Delete FAILED: %s", request.logical_resource_id, reason)
            return self._failed(f"{status}: {reason}" if status else f"malformed response: {answer!r}"[:1000])
        physical_id = str(answer.get("PhysicalResourceId") or event.get("PhysicalResourceId") or request_id)
        if request_type == "Delete":
            _PHYSICAL_IDS.pop(key, None)
            return ProgressEvent(status=OperationStatus.SUCCESS, resource_model={})
        _PHYSICAL_IDS[key] = physical_id
        data = answer.get("Data") or {}
        model = {**props, **(data if isinstance(data, dict) else {}), "PhysicalResourceId": physical_id}
        return ProgressEvent(status=OperationStatus.SUCCESS, resource_model=model)

    @staticmethod
    def _read_answer(s3, bucket: str, object_key: str, *, deadline: float) -> dict | None:
        while True:
            try:
                body = s3.get_object(Bucket=bucket, Key=object_key)["Body"].read()
            except Exception:  # noqa: BLE001 - not there yet
                body = None
            if body is not None:
                try:
                    answer = json.loads(body)
                except ValueError:
                    return {"Status": "FAILED", "Reason": f"response is not JSON: {body[:200]!r}"}
                return answer if isinstance(answer, dict) else {"Status": "FAILED", "Reason": "response is not an object"}
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _failed(message: str) -> ProgressEvent[dict]:
        LOG.warning("custom resource failed: %s", message)
        return ProgressEvent(status=OperationStatus.FAILED, resource_model={}, message=message)
