"""Rebuild the bundled sample CloudTrail tree (``agent/samples/cloudtrail``).

The records are synthetic, written for this project after the record layout in
the AWS CloudTrail documentation (field order, identity shapes, error codes);
nothing is copied from real logs. Output is deterministic: ids come from
``uuid5`` over fixed names and gzip headers carry ``mtime=0`` and no file name,
so running this again yields the same bytes with the same zlib.

Usage: ``python agent/samples/generate.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import base64
import calendar
import gzip
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ACCOUNT = "123456789012"
TRAIL = "management-events"
BUCKET = "cloudtrail"
DAY = "2026/11/27"
_NS = uuid.UUID("6f1c2a4e-1d57-4c1e-9a55-0d7b3a6e2f10")

Record = dict[str, Any]


def _uuid(name: str) -> str:
    return str(uuid.uuid5(_NS, name))


def _hex(name: str, length: int) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:length]


def _auth_blob(name: str) -> str:
    """An opaque "Encoded authorization failure message", as EC2 returns."""
    return base64.urlsafe_b64encode(hashlib.sha512(name.encode()).digest() * 8).decode()[:640]


def _epoch_ms(time: str) -> int:
    hour, minute, second = (int(x) for x in time.split(":"))
    return calendar.timegm((2026, 11, 27, hour, minute, second, 0, 0, 0)) * 1000


# -- identities -------------------------------------------------------------------


def iam_user(name: str) -> Record:
    return {
        "type": "IAMUser",
        "principalId": "AIDA" + _hex("principal/" + name, 17).upper(),
        "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
        "accountId": ACCOUNT,
        "accessKeyId": "AKIA" + _hex("key/" + name, 16).upper(),
        "userName": name,
    }


def console_user(name: str) -> Record:
    identity = iam_user(name)
    identity["accessKeyId"] = "ASIA" + _hex("console/" + name, 16).upper()
    identity["sessionContext"] = {
        "sessionIssuer": {},
        "webIdFederationData": {},
        "attributes": {"creationDate": "2026-11-27T11:40:12Z", "mfaAuthenticated": "true"},
    }
    return identity


def assumed_role(role: str, session: str) -> Record:
    role_id = "AROA" + _hex("role/" + role, 17).upper()
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIA" + _hex(f"session/{role}/{session}", 16).upper(),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                "accountId": ACCOUNT,
                "userName": role,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": "2026-11-27T11:02:45Z", "mfaAuthenticated": "false"},
        },
    }


def root_user() -> Record:
    return {
        "type": "Root",
        "principalId": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:root",
        "accountId": ACCOUNT,
    }


ALICE = "alice"  # administrator working from the console
DEPLOY = ("ci-deploy", "build-4711")  # automation role
INTERN = "intern-bob"  # limited user who trips over permissions
CLI_AGENT = (
    "aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/linux#6.8.0 md/arch#x86_64 lang/python#3.11.9"
)
CONSOLE_AGENT = "AWS Internal"
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
TERRAFORM = "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) aws-sdk-go-v2/1.32.4"


def event(
    key: str,
    *,
    time: str,
    source: str,
    name: str,
    region: str,
    identity: Record,
    ip: str,
    agent: str,
    request: Any,
    response: Any = None,
    error: tuple[str | None, str] | None = None,
    additional: Record | None = None,
    read_only: bool = False,
    event_type: str = "AwsApiCall",
    extra: Record | None = None,
    tls_host: str | None = None,
) -> Record:
    """One record, keys in the order CloudTrail writes them.

    ``error`` is (errorCode, errorMessage); a failed console sign-in has no code.
    ``extra`` holds keys that follow ``recipientAccountId`` (resources, ...).
    """
    rec: Record = {
        "eventVersion": "1.10" if event_type != "AwsConsoleSignIn" else "1.09",
        "userIdentity": identity,
        "eventTime": f"2026-11-27T{time}Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": agent,
    }
    if error is not None:
        if error[0] is not None:
            rec["errorCode"] = error[0]
        rec["errorMessage"] = error[1]
    rec["requestParameters"] = request
    rec["responseElements"] = response
    if additional is not None:
        rec["additionalEventData"] = additional
    if event_type != "AwsConsoleSignIn":
        rec["requestID"] = _uuid("request/" + key)
    rec["eventID"] = _uuid("event/" + key)
    rec["readOnly"] = read_only
    rec["eventType"] = event_type
    rec["managementEvent"] = True
    rec["recipientAccountId"] = ACCOUNT
    rec.update(extra or {})
    rec["eventCategory"] = "Management"
    if tls_host is not None:
        rec["tlsDetails"] = {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": tls_host,
        }
    return rec


def _ec2_unauthorized(key: str) -> tuple[str, str]:
    return (
        "Client.UnauthorizedOperation",
        "You are not authorized to perform this operation. User: "
        f"arn:aws:iam::{ACCOUNT}:user/{INTERN} is not authorized to perform this operation. "
        f"Encoded authorization failure message: {_auth_blob(key)}",
    )


def instance(instance_id: str, state: tuple[int, str], previous: tuple[int, str]) -> Record:
    return {
        "instanceId": instance_id,
        "currentState": {"code": state[0], "name": state[1]},
        "previousState": {"code": previous[0], "name": previous[1]},
    }


# -- the files --------------------------------------------------------------------


def file_east_1205() -> list[Record]:
    """Morning in us-east-1: console logins and an instance launch."""
    r = "us-east-1"
    web = "203.0.113.24"
    ec2 = "ec2.amazonaws.com"
    host = "ec2.us-east-1.amazonaws.com"
    web_ip_bad = "198.51.100.77"
    signin = "signin.amazonaws.com"
    login_to = "https://console.aws.amazon.com/console/home?region=us-east-1"
    unknown_user = {
        "type": "IAMUser",
        "principalId": "AIDA" + _hex("principal/" + ALICE, 17).upper(),
        "accountId": ACCOUNT,
        "accessKeyId": "",
        "userName": ALICE,
    }
    launched = "i-0" + _hex("instance/web-1", 16)
    return [
        event(
            "login-fail-1",
            time="11:51:02",
            source=signin,
            name="ConsoleLogin",
            region=r,
            identity=unknown_user,
            ip=web_ip_bad,
            agent=BROWSER,
            request=None,
            response={"ConsoleLogin": "Failure"},
            error=(None, "Failed authentication"),
            additional={"LoginTo": login_to, "MobileVersion": "No", "MFAUsed": "No"},
            event_type="AwsConsoleSignIn",
            tls_host=signin,
        ),
        event(
            "login-ok-1",
            time="11:52:40",
            source=signin,
            name="ConsoleLogin",
            region=r,
            identity=iam_user(ALICE) | {"accessKeyId": ""},
            ip=web,
            agent=BROWSER,
            request=None,
            response={"ConsoleLogin": "Success"},
            additional={"LoginTo": login_to, "MobileVersion": "No", "MFAUsed": "Yes"},
            event_type="AwsConsoleSignIn",
            tls_host=signin,
        ),
        event(
            "describe-instances-1",
            time="11:53:15",
            source=ec2,
            name="DescribeInstances",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"instancesSet": {}, "filterSet": {}, "includeAllInstances": False},
            read_only=True,
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "run-instances-1",
            time="11:55:09",
            source=ec2,
            name="RunInstances",
            region=r,
            identity=assumed_role(*DEPLOY),
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={
                "instancesSet": {
                    "items": [{"imageId": "ami-0a1b2c3d4e5f60718", "minCount": 1, "maxCount": 1}]
                },
                "instanceType": "t3.micro",
                "blockDeviceMapping": {},
                "monitoring": {"enabled": False},
                "disableApiTermination": False,
                "disableApiStop": False,
                "clientToken": "terraform-20261127115508001",
                "tagSpecificationSet": {
                    "items": [
                        {
                            "resourceType": "instance",
                            "tags": [
                                {"key": "Name", "value": "web-1"},
                                {"key": "team", "value": "payments"},
                            ],
                        }
                    ]
                },
            },
            response={
                "requestId": _uuid("request/run-instances-1"),
                "reservationId": "r-0" + _hex("reservation/web-1", 16),
                "ownerId": ACCOUNT,
                "groupSet": {},
                "instancesSet": {
                    "items": [
                        {
                            "instanceId": launched,
                            "imageId": "ami-0a1b2c3d4e5f60718",
                            "currentInstanceBootMode": "uefi",
                            "instanceState": {"code": 0, "name": "pending"},
                            "privateDnsName": "ip-10-0-1-25.ec2.internal",
                            "amiLaunchIndex": 0,
                            "productCodes": {},
                            "instanceType": "t3.micro",
                            "launchTime": _epoch_ms("11:55:09"),
                            "placement": {"availabilityZone": "us-east-1a", "tenancy": "default"},
                            "monitoring": {"state": "disabled"},
                            "subnetId": "subnet-0" + _hex("subnet/a", 16),
                            "vpcId": "vpc-0" + _hex("vpc/main", 16),
                            "privateIpAddress": "10.0.1.25",
                            "groupSet": {
                                "items": [
                                    {"groupId": "sg-0" + _hex("sg/web", 16), "groupName": "web"}
                                ]
                            },
                            "architecture": "x86_64",
                            "rootDeviceType": "ebs",
                            "rootDeviceName": "/dev/xvda",
                            "tagSet": {
                                "items": [
                                    {"key": "Name", "value": "web-1"},
                                    {"key": "team", "value": "payments"},
                                ]
                            },
                        }
                    ]
                },
            },
            tls_host=host,
        ),
        event(
            "run-instances-denied-1",
            time="11:56:30",
            source=ec2,
            name="RunInstances",
            region=r,
            identity=iam_user(INTERN),
            ip=web_ip_bad,
            agent=CLI_AGENT,
            request={
                "instancesSet": {
                    "items": [{"imageId": "ami-0a1b2c3d4e5f60718", "minCount": 1, "maxCount": 1}]
                },
                "instanceType": "p4d.24xlarge",
                "blockDeviceMapping": {},
                "monitoring": {"enabled": False},
                "disableApiTermination": False,
                "clientToken": _uuid("token/denied-1"),
            },
            error=_ec2_unauthorized("run-instances-denied-1"),
            tls_host=host,
        ),
        event(
            "create-tags-1",
            time="11:57:02",
            source=ec2,
            name="CreateTags",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={
                "resourcesSet": {"items": [{"resourceId": launched}]},
                "tagSet": {
                    "items": [
                        {"key": "Description", "value": "결제 서비스 웹 서버 🚀"},
                        {"key": "owner", "value": "Zoë Ångström"},
                    ]
                },
            },
            response={"requestId": _uuid("request/create-tags-1"), "_return": True},
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "create-sg-1",
            time="11:58:44",
            source=ec2,
            name="CreateSecurityGroup",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={
                "groupName": "bastion-ssh",
                "groupDescription": "SSH from office",
                "vpcId": "vpc-0" + _hex("vpc/main", 16),
            },
            response={
                "requestId": _uuid("request/create-sg-1"),
                "_return": True,
                "groupId": "sg-0" + _hex("sg/bastion", 16),
                "securityGroupArn": f"arn:aws:ec2:{r}:{ACCOUNT}:security-group/sg-0"
                + _hex("sg/bastion", 16),
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "authorize-ingress-1",
            time="11:59:10",
            source=ec2,
            name="AuthorizeSecurityGroupIngress",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={
                "groupId": "sg-0" + _hex("sg/bastion", 16),
                "ipPermissions": {
                    "items": [
                        {
                            "ipProtocol": "tcp",
                            "fromPort": 22,
                            "toPort": 22,
                            "groups": {},
                            "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
                            "ipv6Ranges": {},
                            "prefixListIds": {},
                        }
                    ]
                },
            },
            response={
                "requestId": _uuid("request/authorize-ingress-1"),
                "_return": True,
                "securityGroupRuleSet": {
                    "items": [
                        {
                            "groupOwnerId": ACCOUNT,
                            "groupId": "sg-0" + _hex("sg/bastion", 16),
                            "securityGroupRuleId": "sgr-0" + _hex("sgr/ssh", 16),
                            "isEgress": False,
                            "ipProtocol": "tcp",
                            "fromPort": 22,
                            "toPort": 22,
                            "cidrIpv4": "0.0.0.0/0",
                        }
                    ]
                },
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "allocate-address-1",
            time="12:00:21",
            source=ec2,
            name="AllocateAddress",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"domain": "vpc", "networkBorderGroup": r},
            response={
                "requestId": _uuid("request/allocate-address-1"),
                "publicIp": "198.51.100.200",
                "allocationId": "eipalloc-0" + _hex("eip/1", 16),
                "domain": "vpc",
                "networkBorderGroup": r,
                "publicIpv4Pool": "amazon",
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "associate-address-1",
            time="12:01:05",
            source=ec2,
            name="AssociateAddress",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={
                "instanceId": launched,
                "allocationId": "eipalloc-0" + _hex("eip/1", 16),
                "allowReassociation": False,
            },
            response={
                "requestId": _uuid("request/associate-address-1"),
                "_return": True,
                "associationId": "eipassoc-0" + _hex("eipassoc/1", 16),
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
    ]


def file_east_1210() -> list[Record]:
    """Starting and stopping instances, by someone allowed and someone not."""
    r = "us-east-1"
    ec2 = "ec2.amazonaws.com"
    host = "ec2.us-east-1.amazonaws.com"
    web = "203.0.113.24"
    bad = "198.51.100.77"
    batch = ["i-0" + _hex("instance/batch-1", 16), "i-0" + _hex("instance/batch-2", 16)]
    items = {"items": [{"instanceId": i} for i in batch]}
    return [
        event(
            "start-1",
            time="12:03:12",
            source=ec2,
            name="StartInstances",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"instancesSet": items},
            response={
                "requestId": _uuid("request/start-1"),
                "instancesSet": {
                    "items": [instance(i, (0, "pending"), (80, "stopped")) for i in batch]
                },
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "start-denied-1",
            time="12:04:30",
            source=ec2,
            name="StartInstances",
            region=r,
            identity=iam_user(INTERN),
            ip=bad,
            agent=CLI_AGENT,
            request={"instancesSet": {"items": [{"instanceId": batch[0]}]}},
            error=_ec2_unauthorized("start-denied-1"),
            tls_host=host,
        ),
        event(
            "stop-1",
            time="12:05:55",
            source=ec2,
            name="StopInstances",
            region=r,
            identity=assumed_role(*DEPLOY),
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={"instancesSet": {"items": [{"instanceId": batch[1]}]}, "force": False},
            response={
                "requestId": _uuid("request/stop-1"),
                "instancesSet": {"items": [instance(batch[1], (64, "stopping"), (16, "running"))]},
            },
            tls_host=host,
        ),
        event(
            "stop-denied-1",
            time="12:06:40",
            source=ec2,
            name="StopInstances",
            region=r,
            identity=iam_user(INTERN),
            ip=bad,
            agent=CLI_AGENT,
            request={"instancesSet": {"items": [{"instanceId": batch[1]}]}, "force": True},
            error=_ec2_unauthorized("stop-denied-1"),
            tls_host=host,
        ),
        event(
            "describe-sg-1",
            time="12:07:01",
            source=ec2,
            name="DescribeSecurityGroups",
            region=r,
            identity=iam_user(INTERN),
            ip=bad,
            agent=CLI_AGENT,
            request={"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}},
            read_only=True,
            tls_host=host,
        ),
        event(
            "terminate-1",
            time="12:08:17",
            source=ec2,
            name="TerminateInstances",
            region=r,
            identity=assumed_role(*DEPLOY),
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={"instancesSet": {"items": [{"instanceId": batch[1]}]}},
            response={
                "requestId": _uuid("request/terminate-1"),
                "instancesSet": {
                    "items": [instance(batch[1], (32, "shutting-down"), (80, "stopped"))]
                },
            },
            tls_host=host,
        ),
        event(
            "describe-regions-1",
            time="12:08:59",
            source=ec2,
            name="DescribeRegions",
            region=r,
            identity=iam_user(INTERN),
            ip="2001:db8::7",
            agent=CLI_AGENT,
            request={"regionSet": {}, "allRegions": True},
            read_only=True,
            tls_host=host,
        ),
    ]


def file_east_1220() -> list[Record]:
    """IAM (a global service, logged in us-east-1): a new user with keys."""
    r = "us-east-1"
    iam = "iam.amazonaws.com"
    web = "203.0.113.24"
    new_user = "svc-reporting"
    created = {
        "path": "/",
        "userName": new_user,
        "userId": "AIDA" + _hex("principal/" + new_user, 17).upper(),
        "arn": f"arn:aws:iam::{ACCOUNT}:user/{new_user}",
        "createDate": "Nov 27, 2026, 12:12:03 PM",
    }
    return [
        event(
            "create-user-1",
            time="12:12:03",
            source=iam,
            name="CreateUser",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"userName": new_user, "tags": []},
            response={"user": created},
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "attach-policy-1",
            time="12:12:40",
            source=iam,
            name="AttachUserPolicy",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"userName": new_user, "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "create-key-1",
            time="12:13:02",
            source=iam,
            name="CreateAccessKey",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"userName": new_user},
            response={
                "accessKey": {
                    "userName": new_user,
                    "accessKeyId": "AKIA" + _hex("key/" + new_user, 16).upper(),
                    "status": "Active",
                    "createDate": "Nov 27, 2026, 12:13:02 PM",
                }
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "create-login-profile-1",
            time="12:13:30",
            source=iam,
            name="CreateLoginProfile",
            region=r,
            identity=console_user(ALICE),
            ip=web,
            agent=CONSOLE_AGENT,
            request={"userName": new_user, "passwordResetRequired": True},
            response={
                "loginProfile": {
                    "userName": new_user,
                    "createDate": "Nov 27, 2026, 12:13:30 PM",
                    "passwordResetRequired": True,
                }
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "create-role-denied-1",
            time="12:15:48",
            source=iam,
            name="CreateRole",
            region=r,
            identity=iam_user(INTERN),
            ip="198.51.100.77",
            agent=CLI_AGENT,
            request={
                "roleName": "admin-backdoor",
                "assumeRolePolicyDocument": json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                ),
            },
            error=(
                "AccessDenied",
                f"User: arn:aws:iam::{ACCOUNT}:user/{INTERN} is not authorized to perform: "
                f"iam:CreateRole on resource: arn:aws:iam::{ACCOUNT}:role/admin-backdoor "
                "because no identity-based policy allows the iam:CreateRole action",
            ),
            tls_host="iam.amazonaws.com",
        ),
        event(
            "assume-role-1",
            time="12:16:10",
            source="sts.amazonaws.com",
            name="AssumeRole",
            region=r,
            identity={"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
            ip="ec2.amazonaws.com",
            agent="ec2.amazonaws.com",
            request={
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/web-instance",
                "roleSessionName": "i-0" + _hex("instance/web-1", 16),
            },
            response={
                "credentials": {
                    "accessKeyId": "ASIA" + _hex("sts/web", 16).upper(),
                    "sessionToken": "IQoJb3JpZ2luX2VjE" + _hex("tok", 40),
                    "expiration": "Nov 27, 2026, 6:16:10 PM",
                }
            },
            read_only=True,
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::IAM::Role",
                        "ARN": f"arn:aws:iam::{ACCOUNT}:role/web-instance",
                    }
                ],
                "sharedEventID": _uuid("shared/assume-role-1"),
            },
        ),
    ]


def file_west_1215() -> list[Record]:
    """S3 bucket management in eu-west-1 and a KMS service event."""
    r = "eu-west-1"
    s3 = "s3.amazonaws.com"
    bucket = "payments-exports-eu"
    return [
        event(
            "create-bucket-1",
            time="12:10:31",
            source=s3,
            name="CreateBucket",
            region=r,
            identity=assumed_role(*DEPLOY),
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={
                "CreateBucketConfiguration": {
                    "LocationConstraint": r,
                    "xmlns": "http://s3.amazonaws.com/doc/2006-03-01/",
                },
                "bucketName": bucket,
                "Host": f"{bucket}.s3.{r}.amazonaws.com",
            },
            additional={
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0,
                "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": _hex("amzid/1", 56),
                "bytesTransferredOut": 0,
            },
            extra={"resources": [{"type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}]},
        ),
        event(
            "put-policy-1",
            time="12:11:02",
            source=s3,
            name="PutBucketPolicy",
            region=r,
            identity=assumed_role(*DEPLOY),
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={
                "bucketPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                },
                "bucketName": bucket,
                "Host": f"{bucket}.s3.{r}.amazonaws.com",
                "policy": "",
            },
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::S3::Bucket",
                        "ARN": f"arn:aws:s3:::{bucket}",
                    }
                ]
            },
        ),
        event(
            "public-access-1",
            time="12:11:20",
            source=s3,
            name="PutBucketPublicAccessBlock",
            region=r,
            identity=assumed_role(*DEPLOY),
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={
                "publicAccessBlock": "",
                "bucketName": bucket,
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
                "Host": f"{bucket}.s3.{r}.amazonaws.com",
            },
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::S3::Bucket",
                        "ARN": f"arn:aws:s3:::{bucket}",
                    }
                ]
            },
        ),
        event(
            "get-acl-1",
            time="12:11:45",
            source=s3,
            name="GetBucketAcl",
            region=r,
            identity={"type": "AWSService", "invokedBy": "config.amazonaws.com"},
            ip="config.amazonaws.com",
            agent="config.amazonaws.com",
            request={"bucketName": bucket, "Host": f"{bucket}.s3.{r}.amazonaws.com", "acl": ""},
            read_only=True,
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::S3::Bucket",
                        "ARN": f"arn:aws:s3:::{bucket}",
                    }
                ]
            },
        ),
        event(
            "delete-bucket-denied-1",
            time="12:12:59",
            source=s3,
            name="DeleteBucket",
            region=r,
            identity=iam_user(INTERN),
            ip="198.51.100.77",
            agent=CLI_AGENT,
            request={"bucketName": bucket, "Host": f"{bucket}.s3.{r}.amazonaws.com"},
            error=("AccessDenied", "Access Denied"),
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::S3::Bucket",
                        "ARN": f"arn:aws:s3:::{bucket}",
                    }
                ]
            },
        ),
        event(
            "kms-rotate-1",
            time="12:00:00",
            source="kms.amazonaws.com",
            name="RotateKey",
            region=r,
            identity={"accountId": ACCOUNT, "invokedBy": "AWS Internal"},
            ip="AWS Internal",
            agent="AWS Internal",
            request=None,
            event_type="AwsServiceEvent",
            additional={"keyId": f"arn:aws:kms:{r}:{ACCOUNT}:key/" + _uuid("kms/exports")},
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::KMS::Key",
                        "ARN": f"arn:aws:kms:{r}:{ACCOUNT}:key/" + _uuid("kms/exports"),
                    }
                ]
            },
        ),
    ]


def file_west_1225_plain() -> list[Record]:
    """A plain (uncompressed) export: root activity and an escaped non-ASCII tag."""
    r = "eu-west-1"
    return [
        event(
            "root-login-1",
            time="12:20:14",
            source="signin.amazonaws.com",
            name="ConsoleLogin",
            region=r,
            identity=root_user() | {"accessKeyId": ""},
            ip="203.0.113.99",
            agent=BROWSER,
            request=None,
            response={"ConsoleLogin": "Success"},
            event_type="AwsConsoleSignIn",
            additional={
                "LoginTo": "https://console.aws.amazon.com/console/home?region=eu-west-1",
                "MobileVersion": "No",
                "MFAUsed": "Yes",
                "MfaType": "U2F",
            },
            tls_host="signin.aws.amazon.com",
        ),
        event(
            "stop-logging-denied-1",
            time="12:21:40",
            source="cloudtrail.amazonaws.com",
            name="StopLogging",
            region=r,
            identity=iam_user(INTERN),
            ip="198.51.100.77",
            agent=CLI_AGENT,
            request={"name": f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"},
            error=(
                "AccessDenied",
                f"User: arn:aws:iam::{ACCOUNT}:user/{INTERN} is not authorized to perform: "
                "cloudtrail:StopLogging",
            ),
            tls_host="cloudtrail.eu-west-1.amazonaws.com",
        ),
        event(
            "tag-bucket-1",
            time="12:22:05",
            source="s3.amazonaws.com",
            name="PutBucketTagging",
            region=r,
            identity=console_user(ALICE),
            ip="203.0.113.24",
            agent=CONSOLE_AGENT,
            request={
                "bucketName": "payments-exports-eu",
                "tagging": "",
                "Tagging": {
                    "TagSet": {
                        "Tag": [
                            {"Key": "프로젝트", "Value": "결제 😀"},
                            {"Key": "cost-center", "Value": "€-42"},
                        ]
                    }
                },
            },
            extra={"sessionCredentialFromConsole": "true"},
        ),
        event(
            "get-caller-1",
            time="12:23:31",
            source="sts.amazonaws.com",
            name="GetCallerIdentity",
            region=r,
            identity=iam_user(INTERN),
            ip="198.51.100.77",
            agent=CLI_AGENT,
            request=None,
            read_only=True,
            tls_host="sts.eu-west-1.amazonaws.com",
        ),
    ]


def file_oregon_1230() -> list[Record]:
    """us-west-2: key pairs, instance protection and a KMS key switched off."""
    r = "us-west-2"
    ec2 = "ec2.amazonaws.com"
    host = "ec2.us-west-2.amazonaws.com"
    role = assumed_role(*DEPLOY)
    node = "i-0" + _hex("instance/oregon-1", 16)
    key_id = _uuid("kms/oregon")
    return [
        event(
            "create-key-pair-1",
            time="12:24:10",
            source=ec2,
            name="CreateKeyPair",
            region=r,
            identity=role,
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={"keyName": "oregon-admin", "keyType": "ed25519"},
            response={
                "requestId": _uuid("request/create-key-pair-1"),
                "keyName": "oregon-admin",
                "keyFingerprint": _hex("fp/oregon", 43),
                "keyPairId": "key-0" + _hex("kp/oregon", 16),
                "keyMaterial": "<sensitiveDataRemoved>",
            },
            tls_host=host,
        ),
        event(
            "modify-attr-1",
            time="12:24:55",
            source=ec2,
            name="ModifyInstanceAttribute",
            region=r,
            identity=role,
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={"instanceId": node, "disableApiTermination": {"value": True}},
            response={"requestId": _uuid("request/modify-attr-1"), "_return": True},
            tls_host=host,
        ),
        event(
            "describe-instances-2",
            time="12:25:30",
            source=ec2,
            name="DescribeInstances",
            region=r,
            identity=role,
            ip="192.0.2.10",
            agent=TERRAFORM,
            request={"instancesSet": {"items": [{"instanceId": node}]}, "filterSet": {}},
            read_only=True,
            tls_host=host,
        ),
        event(
            "disable-key-1",
            time="12:26:02",
            source="kms.amazonaws.com",
            name="DisableKey",
            region=r,
            identity=console_user(ALICE),
            ip="203.0.113.24",
            agent=CONSOLE_AGENT,
            request={"keyId": key_id},
            extra={
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::KMS::Key",
                        "ARN": f"arn:aws:kms:{r}:{ACCOUNT}:key/{key_id}",
                    }
                ],
                "sessionCredentialFromConsole": "true",
            },
        ),
        event(
            "login-fail-2",
            time="12:27:41",
            source="signin.amazonaws.com",
            name="ConsoleLogin",
            region=r,
            identity={
                "type": "IAMUser",
                "principalId": "AIDA" + _hex("principal/" + INTERN, 17).upper(),
                "accountId": ACCOUNT,
                "accessKeyId": "",
                "userName": INTERN,
            },
            ip="198.51.100.77",
            agent=BROWSER,
            request=None,
            response={"ConsoleLogin": "Failure"},
            error=(None, "Failed authentication"),
            additional={
                "LoginTo": "https://console.aws.amazon.com/console/home?region=us-west-2",
                "MobileVersion": "No",
                "MFAUsed": "No",
            },
            event_type="AwsConsoleSignIn",
            tls_host="signin.aws.amazon.com",
        ),
    ]


# (region, delivery stamp, builder, gzipped?)
FILES: list[tuple[str, str, Callable[[], list[Record]], bool]] = [
    ("us-east-1", "20261127T1205Z", file_east_1205, True),
    ("us-east-1", "20261127T1210Z", file_east_1210, True),
    ("us-east-1", "20261127T1220Z", file_east_1220, True),
    ("eu-west-1", "20261127T1215Z", file_west_1215, True),
    ("eu-west-1", "20261127T1225Z", file_west_1225_plain, False),
    ("us-west-2", "20261127T1230Z", file_oregon_1230, True),
]


def object_key(region: str, stamp: str, gzipped: bool) -> str:
    suffix = _hex(f"unique/{region}/{stamp}", 16)
    unique = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(suffix))
    name = f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{unique}.json" + (".gz" if gzipped else "")
    return f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{DAY}/{name}"


def digest(log_files: list[tuple[str, bytes, list[Record]]]) -> bytes:
    """The hourly digest for us-east-1 (no Records; must be skipped by readers)."""
    entries = []
    for key, document, records in log_files:
        if "/us-east-1/" not in key:
            continue
        times = sorted(r["eventTime"] for r in records)
        entries.append(
            {
                "s3Bucket": BUCKET,
                "s3Object": key,
                "hashValue": hashlib.sha256(document).hexdigest(),
                "hashAlgorithm": "SHA-256",
                "newestEventTime": times[-1],
                "oldestEventTime": times[0],
            }
        )
    body = {
        "awsAccountId": ACCOUNT,
        "digestStartTime": "2026-11-27T12:00:00Z",
        "digestEndTime": "2026-11-27T13:00:00Z",
        "digestS3Bucket": BUCKET,
        "digestS3Object": digest_key(),
        "digestPublicKeyFingerprint": _hex("digest/key", 32),
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": max(e["newestEventTime"] for e in entries),
        "oldestEventTime": min(e["oldestEventTime"] for e in entries),
        "previousDigestS3Bucket": BUCKET,
        "previousDigestS3Object": digest_key("20261127T120000Z"),
        "previousDigestHashValue": _hex("digest/previous", 64),
        "previousDigestHashAlgorithm": "SHA-256",
        "previousDigestSignature": _hex("digest/signature", 64) * 8,
        "logFiles": entries,
    }
    return orjson.dumps(body)


def digest_key(stamp: str = "20261127T130000Z") -> str:
    r = "us-east-1"
    return (
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{r}/{DAY}/"
        f"{ACCOUNT}_CloudTrail-Digest_{r}_{TRAIL}_{r}_{stamp}.json.gz"
    )


def _write(path: Path, data: bytes, gzipped: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0) if gzipped else data)


def generate(out: Path) -> list[Path]:
    """Write the tree under ``out`` (replacing ``out/AWSLogs``); return the files."""
    if (out / "AWSLogs").exists():
        shutil.rmtree(out / "AWSLogs")
    written: list[tuple[str, bytes, list[Record]]] = []
    paths = []
    for region, stamp, build, gzipped in FILES:
        records = build()
        if gzipped:
            document = orjson.dumps({"Records": records})  # compact, raw UTF-8, as S3 has it
        else:  # an export: pretty-printed, non-ASCII as \uXXXX (emoji as surrogate pairs)
            document = json.dumps({"Records": records}, indent=2).encode() + b"\n"
        key = object_key(region, stamp, gzipped)
        _write(out / key, document, gzipped)
        written.append((key, document, records))
        paths.append(out / key)
    _write(out / digest_key(), digest(written), True)
    paths.append(out / digest_key())
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "cloudtrail")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
