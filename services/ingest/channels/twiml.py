"""TwiML, the XML Twilio executes for a call or a message."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def response(*verbs: str) -> str:
    """A <Response> with the given verbs."""
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


def say(text: str, language: str) -> str:
    """Read text to the caller."""
    return f"<Say language={quoteattr(language)}>{escape(text)}</Say>"


def gather(action: str, language: str, *inner: str) -> str:
    """Listen for speech and post the transcript to `action`; `inner` plays meanwhile.

    Putting <Say> inside <Gather> lets the caller interrupt it (barge-in).
    """
    return (
        f'<Gather input="speech" method="POST" speechTimeout="auto" action={quoteattr(action)} '
        f"language={quoteattr(language)}>" + "".join(inner) + "</Gather>"
    )


def redirect(url: str) -> str:
    """Continue with the TwiML at url."""
    return f'<Redirect method="POST">{escape(url)}</Redirect>'


def dial(number: str) -> str:
    """Transfer the call."""
    return f"<Dial>{escape(number)}</Dial>"


def hangup() -> str:
    """End the call."""
    return "<Hangup/>"
