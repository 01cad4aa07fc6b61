"""Signature checks against the providers' own SDKs as oracles, plus escaping of provider XML."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils import signature_v3 as plivo_sdk
from twilio.request_validator import RequestValidator

from chalicelib.telephony import signatures as sig
from chalicelib.telephony import xml

TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)
PARAMS = st.dictionaries(st.text(alphabet="abcdefXYZ_", min_size=1, max_size=6), TEXT, max_size=5)
# The plivo SDK re-decodes the signed bytes as Latin-1, so it disagrees with itself beyond ASCII:
# compare on the printable ASCII that Plivo's parameters (numbers, UUIDs, states) use.
ASCII_PARAMS = st.dictionaries(st.text(alphabet="abcdefXYZ_", min_size=1, max_size=6),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
                               max_size=5)


@settings(max_examples=60, deadline=None)
@given(params=PARAMS)
def test_twilio_matches_request_validator(params: dict[str, str]) -> None:
    url = "https://gw.example.com/api/telephony/twilio?attempt=1&hold=abc"
    signature = RequestValidator("token").compute_signature(url, params)
    assert sig.twilio_valid("token", url, list(params.items()), signature)
    assert not sig.twilio_valid("other", url, list(params.items()), signature)
    assert not sig.twilio_valid("token", url + "x", list(params.items()), signature)


@settings(max_examples=60, deadline=None)
@given(params=ASCII_PARAMS, method=st.sampled_from(["GET", "POST"]), query=st.sampled_from(["", "?b=2&a=1"]))
def test_plivo_matches_the_sdk(params: dict[str, str], method: str, query: str) -> None:
    uri = "https://gw.example.com/api/telephony/plivo" + query
    nonce = "05429567804466091622"
    if method == "GET":
        base = plivo_sdk.construct_get_url(uri, dict(params))
    else:
        base = plivo_sdk.construct_post_url(uri, dict(params))
    signature = plivo_sdk.get_signature_v3(b"token", base, nonce.encode()).decode()
    assert sig.plivo_base_string(method, uri, list(params.items())) == (
        base.decode() if isinstance(base, bytes | bytearray) else base)
    assert sig.plivo_valid("token", method, uri, list(params.items()), nonce, f"bm9wZQ==,{signature}")
    assert not sig.plivo_valid("token", method, uri, list(params.items()), "other-nonce", signature)


def test_telnyx_ed25519_and_tolerance() -> None:
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    body = b"CallSid=abc&From=%2B1"
    signature = base64.b64encode(key.sign(b"1000|" + body)).decode()
    assert sig.telnyx_valid(public, "1000", body, signature, now=1100, tolerance=300)
    assert not sig.telnyx_valid(public, "1000", body, signature, now=1400.5, tolerance=300)  # stale
    assert not sig.telnyx_valid(public, "1000", body + b"x", signature, now=1100, tolerance=300)
    assert not sig.telnyx_valid(public, "1000", body, "not base64!", now=1100, tolerance=300)
    assert not sig.telnyx_valid("", "1000", body, signature, now=1100, tolerance=300)


def test_daily_pinless_hmac() -> None:
    secret = base64.b64encode(b"s3cret").decode()
    body = b'{"callId":"c"}'
    good = base64.b64encode(hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).digest()).decode()
    assert sig.daily_pinless_valid(secret, "1700000000", body, good, now=1700000010, tolerance=300)
    assert sig.daily_pinless_valid(secret, "1700000000", body, good, now=1700000010, tolerance=300)
    assert not sig.daily_pinless_valid(secret, "1700000000", body, good, now=1700009999, tolerance=300)
    assert not sig.daily_pinless_valid("", "1700000000", body, good, now=1700000010, tolerance=300)
    assert not sig.daily_pinless_valid(secret, None, body, good, now=1700000010, tolerance=300)


def test_xml_values_are_escaped() -> None:
    nasty = '"><Hangup/><Say>&'
    twiml = xml.connect_stream("wss://x/ws?a=1&b=2", {"From": nasty})
    root = ET.fromstring(twiml.split("?>", 1)[1])
    assert root.find("Hangup") is None
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://x/ws?a=1&b=2"
    assert stream.find("Parameter").get("value") == nasty  # type: ignore[union-attr]
    plivo = xml.plivo_stream("wss://x/ws/plivo?serviceHost=a.b&x=<y>")
    assert "&amp;" in plivo and ET.fromstring(plivo.split("?>", 1)[1]).find("Stream").text.endswith("<y>")  # type: ignore[union-attr]
