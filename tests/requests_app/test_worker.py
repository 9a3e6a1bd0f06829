"""The warm worker (requests_app/worker.py): many jobs in one process, and what it does when a job misbehaves.

Real `manage.py rqworker <this run's queue> --burst` processes (the fixture of test_crash_recovery.py: its own
Redis database, the test database, the emulator through the environment) for what only a process can show:
tokens and connections kept across jobs, a restart in place. The worker class in this process for the rest.
"""

from __future__ import annotations

import os

import django_rq
import pytest
from rq.job import JobStatus

from requests_app import jobs
from requests_app.cloud import graph, kubernetes
from requests_app.cloud.errors import CloudError
from requests_app.models import Cluster
from requests_app.worker import Worker
from tests.requests_app import test_crash_recovery as crash
from tests.requests_app import worker_jobs
from tests.requests_app.own_redis import queues_fixture  # noqa: F401
from tests.requests_app.test_crash_recovery import approve, assert_ready_once

workers = crash.workers  # real worker processes, as the crash-recovery tests start them


def run_burst(workers, **env: str):
    """A real worker process over this run's provisioning queue until it is empty (it must exit 0); its pid."""
    workers.env.update(env)
    proc = workers.start(burst=True)
    assert proc.wait(120) == 0, workers.log()
    return proc.pid


def peers(calls: list[dict]) -> set[str]:
    return {c["peer"] for c in calls}


# ---- warm: tokens and connections kept across jobs -------------------------------------------------------------


def test_two_jobs_in_one_worker_fetch_the_portals_tokens_once_and_reuse_connections(
    workers, control, demo_cluster, requester, approver, settings
) -> None:
    queue = django_rq.get_queue(jobs.QUEUE)
    first = approve(demo_cluster, requester, approver, "warm-one")  # queued on commit
    marker = queue.enqueue(worker_jobs.emulator_seq)  # between the two jobs: where the call log divides
    second = approve(demo_cluster, requester, approver, "warm-two")
    start = control.last_seq()

    # One step at a time: ARM clients share one connection pool, so steps running at once in the second job could
    # need one connection more than the first job happened to (a pool grows with concurrency, not per job).
    run_burst(workers, PORTAL_CONCURRENT_STEPS="0")

    assert_ready_once(control, first)
    assert_ready_once(control, second)
    boundary = marker.return_value()
    # The portal's own calls; not the verification's token exchange, made by design as the new identity, anew each
    # time (cloud/verification.py).
    portal = settings.ENTRA_CLIENT_ID
    calls = [c for c in control.calls(since=start) if not (is_token(c) and c["caller"] != portal)]
    one = [c for c in calls if c["seq"] <= boundary]
    two = [c for c in calls if c["seq"] > boundary]
    assert [c for c in one if is_token(c)] and not [c for c in two if is_token(c)]  # the second job fetched none
    # Every call of the second job went over a connection the first job opened (a forking worker opens all anew).
    assert len(peers(one)) > 1 and peers(two) <= peers(one), (peers(one), peers(two))


def is_token(call: dict) -> bool:
    return call["surface"] == "entra" and call["path"].endswith("/oauth2/v2.0/token")


# ---- jobs that misbehave ---------------------------------------------------------------------------------------


def work() -> None:
    """The worker class in this process, over this run's provisioning queue until it is empty."""
    django_rq.get_worker(jobs.QUEUE, worker_class=Worker).work(burst=True)


def test_a_job_that_raises_leaves_the_worker_running_the_next_job_in_the_same_process(queues) -> None:
    broken = queues.provisioning.enqueue(worker_jobs.fail)
    after = queues.provisioning.enqueue(worker_jobs.which_process)
    work()
    assert broken.get_status() == JobStatus.FAILED
    assert "a job with a bug" in broken.latest_result().exc_string
    assert after.get_status() == JobStatus.FINISHED
    assert after.return_value()[0] == os.getpid()  # not a fork: the worker's own process ran it


def test_a_job_past_its_timeout_is_stopped_and_the_worker_goes_on(queues) -> None:
    stuck = queues.provisioning.enqueue(worker_jobs.sleep, 3600, job_timeout=1)
    after = queues.provisioning.enqueue(worker_jobs.which_process)
    work()
    assert stuck.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in stuck.latest_result().exc_string
    assert after.get_status() == JobStatus.FINISHED


def test_a_job_that_ignores_its_timeout_is_left_by_restarting_the_worker_in_place(workers) -> None:
    queue = django_rq.get_queue(jobs.QUEUE)
    stubborn = queue.enqueue(worker_jobs.ignore_the_timeout, 3600, job_timeout=1)
    after = queue.enqueue(worker_jobs.which_process)
    pid = run_burst(workers, PORTAL_WORKER_STOP_GRACE_SECONDS="1")
    assert stubborn.get_status() != JobStatus.FINISHED
    # The same process (exec, not exit: a supervisor sees nothing) as a fresh image: its first job.
    assert after.get_status() == JobStatus.FINISHED
    assert tuple(after.return_value()) == (pid, 1)


def test_the_worker_replaces_itself_with_a_fresh_copy_after_max_jobs(workers) -> None:
    queue = django_rq.get_queue(jobs.QUEUE)
    runs = [queue.enqueue(worker_jobs.which_process) for _ in range(3)]
    pid = run_burst(workers, PORTAL_WORKER_MAX_JOBS="2")
    assert [tuple(j.return_value()) for j in runs] == [(pid, 1), (pid, 2), (pid, 1)]


def test_the_worker_replaces_itself_once_it_has_used_its_memory_limit(workers) -> None:
    queue = django_rq.get_queue(jobs.QUEUE)
    runs = [queue.enqueue(worker_jobs.which_process) for _ in range(2)]
    pid = run_burst(workers, PORTAL_WORKER_MAX_MEMORY_MB="1")  # any worker has used more: it recycles every job
    assert [tuple(j.return_value()) for j in runs] == [(pid, 1), (pid, 1)]


# ---- per-process clients in the adapters ---------------------------------------------------------------------


def test_kubernetes_calls_share_one_client_and_its_connection(control, demo_cluster: Cluster) -> None:
    start = control.last_seq()
    kubernetes.get_service_account(demo_cluster, "team-payments", "nobody-1")
    kubernetes.get_service_account(demo_cluster, "team-payments", "nobody-2")
    k8s = control.calls(since=start, surface="k8s")
    assert len(k8s) == 2 and len(peers(k8s)) == 1
    assert kubernetes.api_client(demo_cluster) is kubernetes.api_client(demo_cluster)


def other_name(url: str) -> str:
    """The same API server under its other name (the emulator's certificate has both)."""
    if "127.0.0.1" in url:
        return url.replace("127.0.0.1", "localhost")
    return url.replace("localhost", "127.0.0.1")


@pytest.mark.parametrize("field", ["api_server_url", "api_server_ca"])
def test_a_changed_cluster_connection_gets_a_new_kubernetes_client(control, demo_cluster: Cluster, field) -> None:
    before = kubernetes.api_client(demo_cluster)
    kubernetes.get_service_account(demo_cluster, "team-payments", "nobody")
    if field == "api_server_url":
        demo_cluster.api_server_url = other_name(demo_cluster.api_server_url)
        assert demo_cluster.api_server_url != before.configuration.host
    else:
        demo_cluster.api_server_ca += "\n"  # another CA text (the same certificate)
    start = control.last_seq()
    kubernetes.get_service_account(demo_cluster, "team-payments", "nobody")  # works through the new client
    assert kubernetes.api_client(demo_cluster) is not before
    assert kubernetes.api_client(demo_cluster).configuration.host == demo_cluster.api_server_url.rstrip("/")
    assert len(control.calls(since=start, surface="k8s")) == 1


def test_graph_rounds_share_one_session_and_its_connection(cloud, control) -> None:
    start = control.last_seq()
    graph.user_access("11111111-1111-4111-8111-111111111111")
    graph.user_access("11111111-1111-4111-8111-111111111111")
    calls = control.calls(since=start, surface="graph")
    assert len(calls) >= 2 and len(peers(calls)) == 1


def test_a_kept_client_still_sends_the_token_only_to_an_api_server_read_from_azure(demo_cluster: Cluster) -> None:
    kubernetes.get_service_account(demo_cluster, "team-payments", "nobody")  # its client is built and kept
    demo_cluster.arm_resource_id = ""  # a row that no longer says it came from Azure
    with pytest.raises(CloudError) as info:
        kubernetes.get_service_account(demo_cluster, "team-payments", "nobody")
    assert info.value.code == "ClusterNotFromAzure"


def test_a_kept_kubernetes_client_reads_the_portals_token_from_the_credential_before_each_call(
    control, demo_cluster: Cluster
) -> None:
    api = kubernetes.api_client(demo_cluster)
    api.configuration.api_key["authorization"] = "a-token-that-expired"  # what a kept client would hold by now
    start = control.last_seq()
    kubernetes.get_service_account(demo_cluster, "team-payments", "nobody")
    assert [c["status"] for c in control.calls(since=start, surface="k8s")] == [404]  # heard, not refused (401)


def test_a_worker_serves_what_it_counted_on_its_own_metrics_port(settings, queues) -> None:
    """On AKS web and workers are separate pods: a worker's steps reach Prometheus through its own port."""
    import socket
    import urllib.request

    from requests_app.observability import metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.PORTAL_WORKER_METRICS_PORT = port
    metrics.step_finished("provisioning", "identity", 0.2, waiting=False, failed=False, code="")
    django_rq.get_worker(jobs.QUEUE, worker_class=Worker)  # starts serving
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: S310
    assert 'portal_step_attempts_total{operation="provisioning",outcome="succeeded",step="identity"}' in body
    assert "portal_queue_jobs" not in body  # the scrape-time gauges are the web's alone
