"""The loop's webhook over real HTTP: only a signed request queues a cycle, and it wakes the loop."""

import json
import threading

import pytest
import requests

from raylane.http import free_port
from raylane.pipelines.webhook import PATH, Webhook, signature

SECRET = b"loop webhook secret"
FIRING = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "RaylaneDriftHigh", "version": "3"}},
        {"status": "resolved", "labels": {"alertname": "RaylaneErrorRate"}},
    ],
}


@pytest.fixture
def hook():
    wake = threading.Event()
    webhook = Webhook("127.0.0.1", free_port(), SECRET, wake)
    yield webhook, wake
    webhook.close()


def test_an_alertmanager_post_with_the_bearer_secret_queues_its_firing_alerts(hook):
    webhook, wake = hook
    response = requests.post(webhook.url, json=FIRING, headers={"Authorization": f"Bearer {SECRET.decode()}"})
    assert response.status_code == 202 and wake.is_set()
    assert webhook.take() == ["RaylaneDriftHigh firing"]
    assert webhook.take() == []  # taken once


def test_an_hmac_signed_body_is_taken_and_a_tampered_one_is_not(hook):
    webhook, wake = hook
    body = json.dumps({"reason": "new labels arrived"}).encode()
    signed = requests.post(webhook.url, data=body, headers={"X-Raylane-Signature": signature(SECRET, body)})
    assert signed.status_code == 202 and webhook.take() == ["new labels arrived"]
    tampered = body.replace(b"new", b"old")
    refused = requests.post(webhook.url, data=tampered, headers={"X-Raylane-Signature": signature(SECRET, body)})
    assert refused.status_code == 401 and webhook.take() == []


@pytest.mark.parametrize(
    "headers, body, status",
    [
        ({}, b"{}", 401),
        ({"Authorization": "Bearer wrong"}, b"{}", 401),
        ({"Authorization": f"Bearer {SECRET.decode()}"}, b"{not json", 400),
        ({"Authorization": f"Bearer {SECRET.decode()}"}, b"[1, 2]", 400),
    ],
)
def test_unsigned_or_malformed_requests_are_refused_and_queue_nothing(hook, headers, body, status):
    webhook, wake = hook
    assert requests.post(webhook.url, data=body, headers=headers).status_code == status
    assert webhook.take() == [] and not wake.is_set()


def test_only_resolved_alerts_queue_nothing_and_other_paths_are_not_served(hook):
    webhook, wake = hook
    resolved = {"status": "resolved", "alerts": [{"status": "resolved", "labels": {"alertname": "RaylaneDriftHigh"}}]}
    bearer = {"Authorization": f"Bearer {SECRET.decode()}"}
    assert requests.post(webhook.url, json=resolved, headers=bearer).status_code == 202
    assert webhook.take() == [] and not wake.is_set()
    other = webhook.url.replace(PATH, "/loop/other")
    assert requests.post(other, json=FIRING, headers=bearer).status_code == 404
