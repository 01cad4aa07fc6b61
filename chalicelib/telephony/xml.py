"""Provider XML (TwiML, TeXML, Plivo XML), built with ElementTree so every value is escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def _render(root: ET.Element) -> str:
    return XML_DECLARATION + ET.tostring(root, encoding="unicode")


def connect_stream(url: str, parameters: dict[str, str], *, bidirectional_rtp: bool = False) -> str:
    """TwiML / TeXML: <Response><Connect><Stream url=...><Parameter .../></Stream></Connect></Response>."""
    root = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(root, "Connect"), "Stream", {"url": url})
    if bidirectional_rtp:
        stream.set("bidirectionalMode", "rtp")
    for name, value in parameters.items():
        ET.SubElement(stream, "Parameter", {"name": name, "value": value})
    return _render(root)


def plivo_stream(url: str) -> str:
    """Plivo XML: the stream URL is element text (escaped by ElementTree)."""
    root = ET.Element("Response")
    stream = ET.SubElement(root, "Stream", {"bidirectional": "true", "keepCallAlive": "true",
                                            "contentType": "audio/x-mulaw;rate=8000"})
    stream.text = url
    return _render(root)


def hold(message: str, pause_seconds: int, redirect_url: str, *, plivo: bool = False) -> str:
    """Say a message, pause, then come back to the webhook (next attempt)."""
    root = ET.Element("Response")
    ET.SubElement(root, "Speak" if plivo else "Say").text = message
    ET.SubElement(root, "Wait" if plivo else "Pause", {"length": str(pause_seconds)})
    redirect = ET.SubElement(root, "Redirect", {"method": "POST"})
    redirect.text = redirect_url
    return _render(root)


def apologise_and_hang_up(message: str, *, plivo: bool = False) -> str:
    root = ET.Element("Response")
    ET.SubElement(root, "Speak" if plivo else "Say").text = message
    ET.SubElement(root, "Hangup")
    return _render(root)
