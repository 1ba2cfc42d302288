"""Signing secrets are stored encrypted (AES-GCM under WEBHOOK_SECRETS_KEYS), re-encrypted
by the dispatcher after a key rotation or when found in clear, and never logged."""

from __future__ import annotations

import logging

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from bricqs.webhook_secrets import SecretBox, SecretKeyError, new_key
from bricqs_dispatcher.settings import DispatcherSettings
from tests.processes import wait_until
from tests.webhooks.conftest import SECRETS_KEYS, Scene, answer
from tests.webhooks.test_delivery import award


def stored(scene: Scene, endpoint_id: str) -> str:
    row = scene.db.execute(
        "SELECT secret FROM webhook_endpoints WHERE endpoint_id = %s", (endpoint_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_secret_is_stored_encrypted_and_resealed_under_a_new_key(scene: Scene) -> None:
    created = scene.hooks.api.post(
        "/api/v1/gamify/admin/webhooks",
        headers=scene.hooks.headers,
        json={"url": scene.receiver.on("/sealed", answer(200)), "event_types": ["*"]},
    ).json()
    endpoint, secret = created["endpoint_id"], created["secret"]
    first = stored(scene, endpoint)
    assert first.startswith("enc1:test:")
    assert secret not in first and secret.removeprefix("whsec_") not in first

    # A new key first, the old one after it: the dispatcher reseals, and still signs.
    rotated = f"next:{new_key()},{SECRETS_KEYS}"
    award(scene.hooks, "s1")
    with scene.dispatcher(webhook_secrets_keys=rotated):
        wait_until(lambda: scene.receiver.at("/sealed"), 20, "the delivery")
    assert stored(scene, endpoint).startswith("enc1:next:")
    request = scene.receiver.at("/sealed")[0]
    assert Webhook(secret).verify(request.body, request.headers)["type"] == "points.awarded"


def test_a_secret_stored_in_clear_is_sealed_by_the_dispatcher(scene: Scene) -> None:
    endpoint = scene.subscribe("/clear", answer(200), ["points.awarded"])
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    scene.db.execute(  # as written before encryption, or with no key set
        "UPDATE webhook_endpoints SET secret = %s WHERE endpoint_id = %s", (secret, endpoint)
    )
    award(scene.hooks, "c1")
    with scene.dispatcher():
        wait_until(lambda: scene.receiver.at("/clear"), 20, "the delivery")
    assert stored(scene, endpoint).startswith("enc1:test:")
    request = scene.receiver.at("/clear")[0]
    assert Webhook(secret).verify(request.body, request.headers)


def test_a_ciphertext_opens_only_for_its_endpoint_and_with_its_key() -> None:
    box = SecretBox(f"a:{new_key()}")
    sealed = box.seal("whsec_x", "whe_1")
    assert box.open(sealed, "whe_1") == "whsec_x"
    with pytest.raises(SecretKeyError):
        box.open(sealed, "whe_2")  # copied onto another endpoint
    with pytest.raises(SecretKeyError, match="no key 'a'"):
        SecretBox(f"b:{new_key()}").open(sealed, "whe_1")
    assert SecretBox("").seal("whsec_x", "whe_1") == "whsec_x"


@pytest.mark.parametrize("keys", ["nokey", "a:short", f"a:{new_key()},b", "a:b:c"])
def test_malformed_keys_are_refused_at_start(keys: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="webhook_secrets_keys"):
        msgspec.convert({"webhook_secrets_keys": keys}, DispatcherSettings)


def test_secrets_are_never_logged(scene: Scene, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = scene.hooks.api.post(
        "/api/v1/gamify/admin/webhooks",
        headers=scene.hooks.headers,
        json={"url": scene.receiver.on("/quiet", answer(500)), "event_types": ["*"]},
    ).json()
    award(scene.hooks, "q1")
    with scene.dispatcher():
        wait_until(lambda: scene.receiver.at("/quiet"), 20, "the attempt")
    assert caplog.records
    assert created["secret"].removeprefix("whsec_") not in caplog.text
