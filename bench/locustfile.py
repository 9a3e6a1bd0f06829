"""The 50-user mix of bench/load.py (locust, headless). Not run on its own: load.py writes the sessions file and
starts locust with BENCH_SESSIONS pointing at it.

Each simulated user is one of the demo tenant's people, signed in (a session cookie made by load.py), and clicks
without pausing through what that person does: a requester their home, requests, a request page and its live poll;
DevOps the identities page (plain, searched, filtered); an approver the queue, a request to decide and, a few
times in the run, an approval (each starts provisioning in the real RQ worker against the emulator); an admin the
audit log (first page, filtered, older pages), drift, exports and the Django admin's lists. BENCH_HEALTHZ=1: every
user asks for /healthz only (the reference run); BENCH_SIGNED_IN=1: every user, signed in as in the mix, asks for
bench/_querycount.py's `/bench/signed-in/` only (what any signed-in page costs before its own work).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import string

from locust import FastHttpUser, constant, task

SESSIONS = json.loads(open(os.environ["BENCH_SESSIONS"]).read()) if os.environ.get("BENCH_SESSIONS") else {}
PEOPLE = itertools.cycle(SESSIONS.get("sessions", []))
WAITING = list(SESSIONS.get("waiting", []))  # requests an approver may approve, each once (load.py caps them)
CSRF = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))  # unmasked: Django takes it

MIX = {
    # (weight, label, path template); {req} a request of the person's, {other} another cluster's id.
    "requester": [
        (3, "home", "/"),
        (3, "my requests", "/requests/"),
        (3, "request page", "/requests/{req}/"),
        (4, "live status poll", "/requests/{req}/status/"),
    ],
    "devops": [
        (2, "home", "/"),
        (4, "identities", "/identities/"),
        (2, "identities search", "/identities/?q=app-1"),
        (1, "identities filtered", "/identities/?namespace=team-search"),
        (2, "request page", "/requests/{req}/"),
    ],
    "approver": [
        (4, "approvals queue", "/approvals/"),
        (2, "approval page", "/approvals/{waiting}/"),
        (1, "home", "/"),
    ],
    "admin": [
        (3, "audit", "/audit/"),
        (1, "audit by action", "/audit/?action=request.approved"),
        (1, "audit by cluster", "/audit/?cluster={other}"),
        (1, "audit by actor", "/audit/?actor=riley%40contoso.example"),
        (1, "drift", "/drift/"),
        (1, "exports page", "/audit/exports/"),
        (1, "admin requests", "/admin/requests_app/identityrequest/"),
        (1, "admin audit events", "/admin/requests_app/auditevent/"),
    ],
}


class Person(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        if os.environ.get("BENCH_HEALTHZ") == "1":
            self.role = "healthz"
            return
        me = next(PEOPLE)
        self.role, self.values = me["role"], me
        self.headers = {"Cookie": f"sessionid={me['session']}; csrftoken={CSRF}"}
        if os.environ.get("BENCH_SIGNED_IN") == "1":
            self.role = "signed-in"
            return
        weighted = MIX[self.role]
        self.choices = [(label, path) for weight, label, path in weighted for _ in range(weight)]
        self.approve_every = int(os.environ.get("BENCH_APPROVE_EVERY", "10"))

    @task
    def click(self) -> None:
        if self.role == "healthz":
            self.client.get("/healthz", name="/healthz")
            return
        if self.role == "signed-in":
            self.client.get("/bench/signed-in/", headers=self.headers, name="/bench/signed-in/")
            return
        if self.role == "approver" and WAITING and random.randrange(self.approve_every) == 0:
            pk = WAITING.pop()
            self.client.post(
                f"/approvals/{pk}/",
                data={"decision": "approve", "comment": "benchmark", "csrfmiddlewaretoken": CSRF},
                headers={**self.headers, "Referer": self.host + "/approvals/"},
                name="approve",
                allow_redirects=False,
            )
            return
        label, path = random.choice(self.choices)
        waiting = WAITING[-1] if WAITING else self.values["req"]
        url = path.format(req=self.values["req"], other=self.values["other"], waiting=waiting)
        self.client.get(url, headers=self.headers, name=label)
