"""The deployment files: k8s-cronjob.yaml, deploy/k8s/cronjob-sharded.yaml and docker-compose.yml.

The API schemas say which fields exist; these tests say what the job needs of them: the
restricted Pod Security Standard, a failure policy that matches the CLI's exit codes, a deadline
that covers every attempt, memory sized by the job's own model, the package's version as the
image tag, a sharded variant equal to the single one but for the sharding, and only environment
variables the job reads.

deploy/compose-spec.json is schema/compose-spec.json of github.com/compose-spec/compose-spec at
commit 00655e2222608fa6eaecdf12ac5195889ca2244a, unmodified, under the Apache License 2.0
(deploy/compose-spec.LICENSE); COMPOSE_SCHEMA_SHA256 pins it (deploy/validate says how to update).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import TypeAdapter

from montage_vec.config import Settings, parse_duration
from montage_vec.errors import ConfigError, PermissionStoreError, RunLockedError, SchemaStoreError
from montage_vec.job.memory import BASE_BYTES, BYTES_PER_CHECKIN

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = {"single": ROOT / "k8s-cronjob.yaml", "sharded": ROOT / "deploy" / "k8s" / "cronjob-sharded.yaml"}
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "deploy" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "bc50c2d79102aed8df21b3a13e56c9396c7a06da6cff5ce37629f2ee7eb41735"
BATCH_ENV_EXAMPLE = ROOT / "deploy" / "montage-batch.env.example"
VALIDATE_SCRIPT = ROOT / "deploy" / "validate"

CONTAINER = "montage-batch"
IMAGE_USER = 10001  # the Dockerfile's numeric USER 10001:10001
COMPOSE_PROFILES = {"full", "batch"}
# Exit codes on which a retry cannot help, and the one that means "later" (README, "Commands").
FAIL_JOB_EXIT_CODES = {ConfigError.exit_code, SchemaStoreError.exit_code, PermissionStoreError.exit_code}
IGNORE_EXIT_CODES = {RunLockedError.exit_code}
# What the sharded manifest may add or change; everything else must equal the single one.
SHARDING_JOB_FIELDS = ("completionMode", "completions", "parallelism", "backoffLimitPerIndex", "backoffLimit")
SHARDING_ENV = ("MONTAGE_SHARD_COUNT",)
# Set by Kubernetes in every pod of an Indexed Job.
KUBERNETES_ENV = {"JOB_COMPLETION_INDEX"}
# The benchmark's data set has 20 check-ins per user (benchmarks/results.md).
CHECKINS_PER_USER = 20
# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip

SETTING_NAMES = {name.upper() for name in Settings.model_fields}


# -- loading --------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        documents = list(yaml.safe_load_all(handle))
    assert len(documents) == 1, f"{path.name}: one document expected"
    return documents[0]


@pytest.fixture(params=sorted(MANIFESTS), scope="module")
def manifest(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_yaml(MANIFESTS[request.param])


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return load_yaml(MANIFESTS["single"])


@pytest.fixture(scope="module")
def sharded() -> dict[str, Any]:
    return load_yaml(MANIFESTS["sharded"])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def job_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["jobTemplate"]["spec"]


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return job_spec(manifest)["template"]["spec"]


def job_container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(manifest)["containers"]
    assert [c["name"] for c in containers] == [CONTAINER]
    return containers[0]


def env_values(manifest: dict[str, Any]) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in job_container(manifest).get("env", [])}


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (384Mi, 1G, 1048576) in bytes."""
    units = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G)?", str(text))
    assert match, f"not a memory quantity: {text!r}"
    return int(match[1]) * units[match[2] or ""]


def docker_bytes(text: str) -> int:
    """A Docker memory size (768m, 1g) in bytes; Docker's units are binary."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", str(text).lower())
    assert match, f"not a Docker memory size: {text!r}"
    return int(match[1]) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match[2]]


def budget_bytes(text: str) -> int:
    """MONTAGE_MEMORY_BUDGET as the job parses it."""
    return int(TypeAdapter(Settings.model_fields["montage_memory_budget"].annotation).validate_python(text))


def package_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def validate_script_versions() -> tuple[str, str]:
    text = VALIDATE_SCRIPT.read_text()
    oldest = re.search(r"^K8S_OLDEST=(\S+)$", text, re.MULTILINE)
    newest = re.search(r"^K8S_NEWEST=(\S+)$", text, re.MULTILINE)
    assert oldest and newest, "deploy/validate names K8S_OLDEST and K8S_NEWEST"
    return oldest[1], newest[1]


def compose_env(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment", {})
    if isinstance(environment, dict):
        return {name: None if value is None else str(value) for name, value in environment.items()}
    pairs = (item.partition("=") for item in environment)
    return {name: value if separator else None for name, separator, value in pairs}


def job_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("montage-vec:")
    }
    assert services, "docker-compose.yml runs the job"
    return services


# -- the Kubernetes API schemas -------------------------------------------------------------------


@pytest.mark.parametrize("version", validate_script_versions())
@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_matches_the_kubernetes_api_schema(name: str, version: str) -> None:
    """What `deploy/validate` runs: strict, so a misspelt field is an error, not ignored."""
    resource = load_yaml(MANIFESTS[name])
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{MANIFESTS[name].name} against Kubernetes {version}: {path}: {exc.message}")


def test_the_validated_versions_are_the_supported_range() -> None:
    # 1.31: podFailurePolicy is GA; the newest: what the installed kubernetes-validate knows.
    assert validate_script_versions() == ("1.31.0", kubernetes_validate.utils.latest_version())


# -- pod security -------------------------------------------------------------------------------


def test_pod_meets_the_restricted_pod_security_standard(manifest: dict[str, Any]) -> None:
    pod = pod_spec(manifest)
    for flag in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert flag not in pod or (flag == "hostUsers" and pod[flag] is False), flag
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] == IMAGE_USER, "numeric, non-zero: runAsNonRoot cannot check a user name"
    assert pod_context["runAsGroup"] == IMAGE_USER
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "initContainers" not in pod and "ephemeralContainers" not in pod
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("privileged", False) is False
        assert context.get("runAsUser", IMAGE_USER) != 0
        assert context.get("runAsNonRoot", True) is True
        assert all("hostPort" not in port for port in container.get("ports", []))
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUME_TYPES, f"volume {volume['name']}: {kinds}"
    assert pod["automountServiceAccountToken"] is False


def test_only_tmp_is_writable_and_it_is_bounded(manifest: dict[str, Any]) -> None:
    pod = pod_spec(manifest)
    mounts = {mount["mountPath"]: mount["name"] for mount in job_container(manifest)["volumeMounts"]}
    assert set(mounts) == {"/tmp"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tmp = volumes[mounts["/tmp"]]
    assert set(tmp) == {"name", "emptyDir"}
    assert quantity_bytes(tmp["emptyDir"]["sizeLimit"]) > 0
    assert tmp["emptyDir"].get("medium") != "Memory", "a tmpfs would count against the memory limit"


# A full run's spool (montage_vec/job/spool.py) in /tmp, MONTAGE_SCRATCH_DIR's default: the lz4-compressed
# check-ins of the benchmark's data took 256 MiB for 2 M check-ins.
SPOOL_BYTES_PER_CHECKIN = 135


def test_tmp_holds_a_full_runs_spool_of_a_million_users(manifest: dict[str, Any]) -> None:
    """An emptyDir past its sizeLimit gets the pod evicted, with no run outcome of its own."""
    volumes = {volume["name"]: volume for volume in pod_spec(manifest)["volumes"]}
    size_limit = quantity_bytes(volumes["tmp"]["emptyDir"]["sizeLimit"])
    assert size_limit >= 1_000_000 * CHECKINS_PER_USER * SPOOL_BYTES_PER_CHECKIN


# -- failures, retries and deadlines -------------------------------------------------------------


def exit_code_rules(manifest: dict[str, Any], action: str) -> set[int]:
    codes: set[int] = set()
    for rule in job_spec(manifest)["podFailurePolicy"]["rules"]:
        if rule["action"] == action and "onExitCodes" in rule:
            requirement = rule["onExitCodes"]
            assert requirement["containerName"] == CONTAINER
            assert requirement["operator"] == "In"
            codes |= set(requirement["values"])
    return codes


def test_pod_failure_policy_follows_the_exit_codes(manifest: dict[str, Any]) -> None:
    assert pod_spec(manifest)["restartPolicy"] == "Never", "podFailurePolicy requires it"
    rules = job_spec(manifest)["podFailurePolicy"]["rules"]
    assert {rule["action"] for rule in rules} <= {"FailJob", "Ignore", "Count"}
    assert exit_code_rules(manifest, "FailJob") == FAIL_JOB_EXIT_CODES
    assert exit_code_rules(manifest, "Ignore") == IGNORE_EXIT_CODES
    disruption = [rule for rule in rules if "onPodConditions" in rule]
    assert disruption == [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}], (
        "evictions and preemptions must not count against the retries"
    )


def attempts(manifest: dict[str, Any]) -> int:
    """How many runs can follow one another: an Indexed Job's shards run side by side."""
    spec = job_spec(manifest)
    if spec.get("completionMode") == "Indexed":
        assert spec["parallelism"] == spec["completions"], "the deadline arithmetic assumes all shards at once"
        return int(spec["backoffLimitPerIndex"]) + 1
    return int(spec["backoffLimit"]) + 1


def test_deadline_covers_every_attempt(manifest: dict[str, Any]) -> None:
    timeout = parse_duration(str(env_values(manifest)["BATCH_PROCESSING_TIMEOUT"])).total_seconds()
    grace = pod_spec(manifest)["terminationGracePeriodSeconds"]
    runs = attempts(manifest)
    assert job_spec(manifest)["activeDeadlineSeconds"] >= runs * (timeout + grace)


def test_grace_period_outlasts_a_chunk_and_compose_agrees(manifest: dict[str, Any], compose: dict) -> None:
    grace = pod_spec(manifest)["terminationGracePeriodSeconds"]
    assert grace >= 30, "the chunks in flight commit after SIGTERM (about 1 s each on the benchmark machine)"
    for name, service in job_services(compose).items():
        assert parse_duration(service["stop_grace_period"]).total_seconds() == grace, name


# -- sizing and image -----------------------------------------------------------------------------


def test_resources_follow_the_memory_model(manifest: dict[str, Any]) -> None:
    env = env_values(manifest)
    resources = job_container(manifest)["resources"]
    request = quantity_bytes(resources["requests"]["memory"])
    limit = quantity_bytes(resources["limits"]["memory"])
    concurrency = int(env["MAX_CONCURRENT_GENERATIONS"] or 0)
    chunk_checkins = int(env["MONTAGE_BATCH_SIZE"] or 0) * CHECKINS_PER_USER
    modelled_peak = BASE_BYTES + BYTES_PER_CHECKIN * chunk_checkins * concurrency
    assert modelled_peak <= request <= limit
    assert budget_bytes(str(env["MONTAGE_MEMORY_BUDGET"])) <= limit, "the budget warns before the limit kills"
    assert resources["requests"]["cpu"] == str(concurrency), "one core per chunk in flight"
    assert "cpu" not in resources["limits"], "no CPU limit: throttling only stretches chunks and the SIGTERM drain"


def test_image_is_the_package_version(manifest: dict[str, Any], compose: dict[str, Any]) -> None:
    container = job_container(manifest)
    expected = f"montage-vec:{package_version()}"
    assert container["image"] == expected, "release pipelines bump the tag with pyproject.toml's version"
    assert container["imagePullPolicy"] == "IfNotPresent"
    for name, service in job_services(compose).items():
        assert service["image"] == expected, name


# -- the sharded variant --------------------------------------------------------------------------


def test_sharded_job_runs_one_completion_per_shard(sharded: dict[str, Any]) -> None:
    spec = job_spec(sharded)
    env = env_values(sharded)
    shards = int(str(env["MONTAGE_SHARD_COUNT"]))
    assert shards > 1
    assert spec["completionMode"] == "Indexed", "Kubernetes sets JOB_COMPLETION_INDEX only for Indexed Jobs"
    assert spec["completions"] == spec["parallelism"] == shards
    assert "MONTAGE_SHARD" not in env, "the index comes from JOB_COMPLETION_INDEX"
    assert spec["backoffLimit"] == spec["backoffLimitPerIndex"] * shards


def without_sharding(manifest: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(manifest)
    spec = job_spec(stripped)
    for field in SHARDING_JOB_FIELDS:
        spec.pop(field, None)
    container = job_container(stripped)
    container["env"] = [item for item in container["env"] if item["name"] not in SHARDING_ENV]
    return stripped


def test_single_and_sharded_manifests_agree(single: dict[str, Any], sharded: dict[str, Any]) -> None:
    assert sharded["metadata"]["name"] == single["metadata"]["name"], (
        "one CronJob name, so applying one layout replaces the other"
    )
    assert job_spec(sharded)["backoffLimitPerIndex"] == job_spec(single)["backoffLimit"]
    assert "completionMode" not in job_spec(single)
    assert not set(SHARDING_ENV) & set(env_values(single))
    assert without_sharding(sharded) == without_sharding(single)


# -- environment variables ------------------------------------------------------------------------


def env_names() -> dict[str, set[str]]:
    names = {path.name: set(env_values(load_yaml(path))) for path in MANIFESTS.values()}
    for service_name, service in job_services(load_yaml(COMPOSE)).items():
        names[f"docker-compose.yml:{service_name}"] = set(compose_env(service))
    lines = BATCH_ENV_EXAMPLE.read_text().splitlines()
    names[BATCH_ENV_EXAMPLE.name] = {
        line.lstrip("# ").partition("=")[0] for line in lines if re.match(r"^#? ?[A-Z][A-Z0-9_]*=", line)
    }
    return names


def test_every_variable_is_one_the_job_reads() -> None:
    known = SETTING_NAMES | KUBERNETES_ENV
    unknown = {source: sorted(names - known) for source, names in env_names().items() if names - known}
    assert not unknown, f"not settings of the job (montage_vec/config/settings.py): {unknown}"


def test_the_old_jobs_variable_names_stay(single: dict[str, Any]) -> None:
    assert {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_SSLMODE"} <= set(env_values(single))


# -- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    raw = COMPOSE_SCHEMA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == COMPOSE_SCHEMA_SHA256, "the vendored schema changed"
    schema = json.loads(raw)
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors]


def profiles_of(service: dict[str, Any]) -> set[str]:
    return set(service.get("profiles", []))


def test_compose_profiles_full_and_batch(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert all(profiles_of(service) for service in services.values()), "every service belongs to a profile"
    assert set().union(*(profiles_of(service) for service in services.values())) == COMPOSE_PROFILES
    by_profile = {
        profile: {n for n, s in services.items() if profile in profiles_of(s)} for profile in COMPOSE_PROFILES
    }
    assert {"postgres", "pushgateway"} <= by_profile["full"]
    assert not {"postgres", "pushgateway"} & by_profile["batch"], "batch runs against an existing database"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert profiles_of(services[dependency]) >= profiles_of(service), f"{name} -> {dependency}"


def test_compose_migrates_before_every_run(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in job_services(compose).items():
        if service["command"] == ["migrate"]:
            continue
        assert service["command"] in (["once"], ["scheduler"]), name
        migrations = [
            dependency
            for dependency, condition in service["depends_on"].items()
            if services[dependency].get("command") == ["migrate"]
        ]
        assert migrations, f"{name} runs after a migrate service"
        assert service["depends_on"][migrations[0]]["condition"] == "service_completed_successfully"
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:15\.\d+", postgres["image"]), "PostgreSQL 15, pinned to a minor version"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_job_containers_are_hardened(compose: dict[str, Any], single: dict[str, Any]) -> None:
    limit = quantity_bytes(job_container(single)["resources"]["limits"]["memory"])
    for name, service in job_services(compose).items():
        assert service["user"] == f"{IMAGE_USER}:{IMAGE_USER}", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert any(entry.split(":")[0] == "/tmp" for entry in service["tmpfs"]), name
        assert "privileged" not in service and "network_mode" not in service, name
        assert docker_bytes(service["mem_limit"]) == limit, f"{name}: the same limit as the pod"
        assert budget_bytes(str(compose_env(service)["MONTAGE_MEMORY_BUDGET"])) <= limit, name


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
