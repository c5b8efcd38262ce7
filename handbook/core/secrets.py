"""Keeping secrets out of what the handbook prints and stores.

An API key reaches a run in two ways: the environment variable a backend names (``api_key_env``; the value is read
by :class:`~handbook.core.backends.OpenAIBackend` and sent as the bearer, never kept elsewhere) or, by mistake, in
text the user typed — a URL with credentials (``http://user:sk-...@host/v1``) or a key pasted where a variable's
*name* belongs (``--api_key_env sk-...``). :func:`redact` is applied to everything a run stores or prints that came
from the user (URLs in cache headers and messages, the command line in lock files); :func:`looks_like_key` is how
a name is checked before it is echoed.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# Provider key shapes (OpenAI ``sk-``, Anthropic ``sk-ant-``, GitHub ``ghp_``/``gho_``/``github_pat_``, Hugging
# Face ``hf_``, Slack ``xox?-``, AWS ``AKIA``) and any long unbroken run of key characters.
_KEY = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{8,}|sk_[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}"
                  r"|hf_[A-Za-z0-9]{16,}|xox[abpr]-[A-Za-z0-9-]{10,}|AKIA[A-Z0-9]{16})")
_LONG_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{32,}$")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

MASK = "***"

#: Where the command line's ``--allow_key_env NAME`` (and a typed ``--api_key_env NAME``) put the key variables the
#: user chose to send to a server (comma-separated); a recipe's ``env:`` may not set it.
ALLOW_KEY_ENV = "HANDBOOK_ALLOW_KEY_ENV"


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it (``user:password@``) and every key-shaped token replaced
    by ``***``: ``http://u:sk-abc...@host/v1`` → ``http://***@host/v1``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _KEY.sub(MASK, text)


def redact_url(url: str) -> str:
    """``url`` without its credentials (``scheme://***@host/...``), unchanged when it has none."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def looks_like_key(value: str) -> bool:
    """Whether ``value`` has the shape of a secret rather than of an environment variable's name."""
    return bool(_KEY.search(value)) or bool(_LONG_TOKEN.match(value) and re.search(r"[a-z]", value)
                                            and re.search(r"[0-9]", value)) or not _VARIABLE_NAME.match(value)


def check_variable_name(value: str | None, option: str = "api_key_env") -> None:
    """Refuse ``value`` as the *name* of an environment variable when it is not one, without echoing it (it may be
    the key itself, pasted in the wrong place)."""
    if value is not None and looks_like_key(value):
        raise ValueError(f"`{option}` names the environment variable that holds the key (e.g. OPENAI_API_KEY); the "
                         f"value given is not a variable name and may be a key itself, so it is not shown. Put the "
                         f"key in an environment variable and pass that variable's name.")
