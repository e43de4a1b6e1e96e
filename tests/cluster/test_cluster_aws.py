"""`ray up cluster/aws.yaml` against a mocked AWS (moto), as far as it goes without an instance.

moto's server stands in for EC2, IAM and EFS on 127.0.0.1 (AWS_ENDPOINT_URL), and `ssh` and
`rsync` are recorders on PATH (a mocked instance cannot be reached), so the real `ray up` CLI
runs Ray's own AWS code: the key pair, the IAM instance profile, the subnet, AMI and
security-group checks, the head's launch, then every command it would run on the head over
SSH, in order; `ray down` then terminates it. The REPLACE_MEs are filled as a user would (text
replacement): a subnet of the VPC, a security group made with cluster/README.md's commands, an
AMI that moto knows, an EFS file system. What cannot be run here: SSH to the head, the
autoscaler launching spot GPU workers from the head, EFS over NFS.
"""

import json
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from cluster_helpers import RAY
from helpers import ROOT, free_port, job_env

AWS_YAML = ROOT / "cluster" / "aws.yaml"
REGION, ZONE = "us-west-2", "us-west-2a"
MY_IP = "203.0.113.7/32"  # the user's address in README's SSH rule (a documentation address)
RECORDER = """#!{python}
# Records what `ray up` would run: argv as one JSON line; an rsync of a file keeps a copy of it.
import json, os, shutil, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
if os.path.basename(sys.argv[0]) == "rsync" and os.path.isfile(sys.argv[-2]):
    shutil.copy(sys.argv[-2], os.path.join(os.environ["RECORD"] + ".files", os.path.basename(sys.argv[-1])))
"""


@pytest.fixture
def mocked_aws(tmp_path):
    """moto's server on a free loopback port; the environment `ray up` runs in: moto's endpoint,
    fake credentials, no AWS config of this machine, its own home, recorders for ssh and rsync."""
    moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto_server is None:
        pytest.skip("moto is not installed (pip install -r requirements-dev.txt)")
    port = free_port()
    env = {k: v for k, v in job_env().items() if not k.startswith(("AWS_", "RAY_"))}
    env.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        HOME=str(tmp_path / "home"),  # ray up writes ~/.ssh/ray-autoscaler_*.pem
        RAY_USAGE_STATS_ENABLED="0",
        MOTO_IAM_LOAD_MANAGED_POLICIES="true",  # AmazonEC2FullAccess and the like
    )
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("ssh", "rsync"):
        (tools / tool).write_text(RECORDER.format(python=sys.executable))
        (tools / tool).chmod(stat.S_IRWXU)
    env["RECORD"] = str(tmp_path / "record.jsonl")
    (tmp_path / "record.jsonl.files").mkdir()
    env["PATH"] = f"{tools}:{Path(sys.executable).parent}:/usr/bin:/bin"
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 (the child owns it)
    server = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client(env, "ec2").describe_regions()
                break
            except Exception:  # not listening yet
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(30)


def client(env: dict, name: str):
    return boto3.client(
        name,
        region_name=REGION,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def users_aws_resources(env: dict) -> dict[str, str]:
    """What cluster/README.md has the user make before the first `ray up`, made in moto."""
    ec2 = client(env, "ec2")
    (vpc,) = ec2.describe_vpcs()["Vpcs"]
    (subnet,) = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [ZONE]}])["Subnets"]
    assert subnet["MapPublicIpOnLaunch"]  # public IPs on launch, as aws.yaml asks
    sg = ec2.create_security_group(GroupName="tune-sweeps", Description="tune-sweeps Ray cluster", VpcId=vpc["VpcId"])
    group = sg["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]}]
    )
    ec2.authorize_security_group_ingress(GroupId=group, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=MY_IP)
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": group}]}
        ],
    )
    (ami,) = ec2.describe_images(Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}])["Images"]
    efs = client(env, "efs").create_file_system(CreationToken="tune-sweeps")
    return {
        "sg-REPLACE_ME": group,
        "subnet-REPLACE_ME": subnet["SubnetId"],
        "ami-REPLACE_ME": ami["ImageId"],
        "fs-REPLACE_ME": efs["FileSystemId"],
    }


def ingress(env: dict, group_id: str) -> list[dict]:
    ec2 = client(env, "ec2")
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return sorted(
        (
            {
                "protocol": p["IpProtocol"],
                "ports": (p.get("FromPort"), p.get("ToPort")),
                "from": sorted(
                    [r["CidrIp"] for r in p.get("IpRanges", [])] + [g["GroupId"] for g in p["UserIdGroupPairs"]]
                ),
            }
            for p in group["IpPermissions"]
        ),
        key=str,
    )


@pytest.mark.slow  # about 30 s
def test_ray_up_on_a_mocked_aws_launches_the_head_as_configured_and_opens_nothing(mocked_aws, tmp_path):
    env = mocked_aws
    record = Path(env["RECORD"])
    ids = users_aws_resources(env)
    text = AWS_YAML.read_text()
    for placeholder, value in ids.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    assert "REPLACE_ME" not in json.dumps(yaml.safe_load(text))  # only the comments still say it
    config = tmp_path / "aws.yaml"
    config.write_text(text)
    group = ids["sg-REPLACE_ME"]
    rules_before = ingress(env, group)

    # The AWS resource ids change every run: no cached config (the README's command has none to reuse).
    started = time.monotonic()
    result = subprocess.run(
        [RAY, "up", "-y", "--no-config-cache", str(config)], env=env, capture_output=True, text=True, timeout=900
    )
    print(f"ray up against moto: exit {result.returncode} after {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]

    # The head: one instance, as aws.yaml describes it, on demand (not spot).
    ec2 = client(env, "ec2")
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    (head,) = [i for i in instances if i["State"]["Name"] == "running"]
    tags = {t["Key"]: t["Value"] for t in head["Tags"]}
    assert tags["ray-node-type"] == "head" and tags["ray-cluster-name"] == "tune-sweeps"
    assert head["InstanceType"] == "m5.2xlarge" and head["ImageId"] == ids["ami-REPLACE_ME"]
    assert head["SubnetId"] == ids["subnet-REPLACE_ME"] and head["Placement"]["AvailabilityZone"] == ZONE
    assert "InstanceLifecycle" not in head  # on demand: the head holds the driver and MLflow
    assert head["KeyName"] == f"ray-autoscaler_{REGION}"

    # Security groups: the head has only the user's group; Ray created none and changed no rule;
    # nothing in the account is open to the world.
    assert [g["GroupId"] for g in head["SecurityGroups"]] == [group]
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert sorted(g["GroupName"] for g in groups) == ["default", "tune-sweeps"]
    assert ingress(env, group) == rules_before
    readme_rules = [("-1", (None, None), [group]), ("tcp", (22, 22), [MY_IP]), ("tcp", (2049, 2049), [group])]
    assert sorted(((r["protocol"], r["ports"], r["from"]) for r in rules_before), key=str) == sorted(
        readme_rules, key=str
    )
    open_to_world = [
        (g["GroupName"], r)
        for g in groups
        for p in g["IpPermissions"]
        for r in [x["CidrIp"] for x in p.get("IpRanges", [])] + [x["CidrIpv6"] for x in p.get("Ipv6Ranges", [])]
        if r in ("0.0.0.0/0", "::/0")
    ]
    assert not open_to_world

    # IAM: Ray's default instance profile, on the head only: its role may use EC2 (to launch
    # and stop the GPU workers) and S3; the workers get no AWS role at all.
    iam = client(env, "iam")
    profile = iam.get_instance_profile(InstanceProfileName="ray-autoscaler-v1")["InstanceProfile"]
    assert head["IamInstanceProfile"]["Arn"] == profile["Arn"]
    (role,) = profile["Roles"]
    policies = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert sorted(p["PolicyName"] for p in policies) == ["AmazonEC2FullAccess", "AmazonS3FullAccess"]
    assert not iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    statement = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in statement] == [{"Service": "ec2.amazonaws.com"}]
    bootstrap = yaml.safe_load((Path(f"{record}.files") / "ray_bootstrap_config.yaml").read_text())
    workers = {n: t for n, t in bootstrap["available_node_types"].items() if n != bootstrap["head_node_type"]}
    assert workers and all("IamInstanceProfile" not in t["node_config"] for t in workers.values())
    assert all(t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for t in workers.values())
    assert all(t["node_config"]["SecurityGroupIds"] == [group] for t in workers.values())

    # What `ray up` ran on the head over SSH, in order: the YAML's commands, EFS included.
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    # ssh ... "bash --login -c -i 'source ~/.bashrc; ...; (COMMAND)'": the shell's script, unquoted.
    ssh = [shlex.split(c[-1])[-1] for c in calls if Path(c[0]).name == "ssh"]
    rsync = [c[-1] for c in calls if Path(c[0]).name == "rsync"]
    assert all(c[c.index("-i") + 1].endswith(f".ssh/ray-autoscaler_{REGION}.pem") for c in calls if "-i" in c)
    assert any(target.endswith(":/home/ubuntu/tune-sweeps/") for target in rsync)
    expected = yaml.safe_load(text)
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "head_start_ray_commands"):
        for command in expected[key]:
            assert any(command in s for s in ssh), f"{key}: not run on the head: {command}"
    order = [
        next(i for i, s in enumerate(ssh) if "apt-get" in s),
        next(i for i, s in enumerate(ssh) if "pip install" in s),
    ]
    order.append(next(i for i, s in enumerate(ssh) if "ray start --head" in s))
    assert order == sorted(order)
    assert any(f"{ids['fs-REPLACE_ME']}.efs.{REGION}.amazonaws.com:/ /shared" in s for s in ssh)

    # `ray down` runs `ray stop` there and terminates the instance (spot or not, nothing stopped).
    result = subprocess.run([RAY, "down", "-y", str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    states = {
        i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert states[head["InstanceId"]] == "terminated"
    after = [json.loads(line) for line in record.read_text().splitlines()[len(calls) :]]
    assert any("ray stop" in shlex.split(c[-1])[-1] for c in after if Path(c[0]).name == "ssh")
