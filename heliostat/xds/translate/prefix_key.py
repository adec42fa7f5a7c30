"""The listener's Lua program: prefix keys (`affinity.prefix_chars`) and fallback moves.

Envoy's hash policies read headers, not bodies. For clients that send no session header, this
program (Envoy's Lua HTTP filter, one copy per listener) reads the OpenAI body, takes the
first N characters of `prompt` (or of the chat messages' contents, joined by newlines) and
writes a digest of them into a header the route hashes on; requests that share a long system
prompt then land on the replica whose prefix cache holds it.

It acts only on routes whose metadata (under the filter's name) carries `prefix_chars`,
`session_header` and `key_header`, so other routes never buffer their bodies here, and only
when the session header is absent (a session key wins). A client-sent key header is removed
first. Bodies that are not JSON objects, or have no prompt, get no key: Envoy then picks a
replica at random within the hash load balancer's bounds.

The same program moves a share of a model's requests to its fallback model, on routes whose
metadata carries `fallback` (below). A moved request is decided before its prefix key, and
gets the key its new model asks for (or none). One program, one JSON parser, one copy of the
body: SOURCE is the parser and prompt functions (`lua/library.lua`), the fallback's functions
(`lua/fallback.lua`), then the entry point (`lua/entry.lua`). The Lua lives in those files,
shipped as package data and read once at import, so it can be read, linted and run by
luajit as Lua; the tests run SOURCE under luajit with a stand-in for Envoy's handle.

The fallback's part (`lua/fallback.lua`): which request moves, and its body's `"model"`
rewritten.

A model's routes carry, while the control law gives its view a fallback share, route metadata
`fallback` (under the Lua filter's name): the fallback model, the share, the session header,
and the headers to write (see `fallback.py`). For each request the program:

1. decides: a request with the session header goes by a hash of it into BUCKETS (10,000)
   buckets, so a session stays on one model (and as the share grows, the sessions already moved stay
   moved); one without goes by a hash of Envoy's `x-request-id` (a UUID per request), and,
   should even that be missing, by `math.random`;
2. when it moves: replaces `x-model` with the fallback's name (header routes come before body
   routes, so a request routed by its body's model moves too), adds
   `x-heliostat-fallback-from`, and clears the route cache: Envoy routes it again, to the
   fallback model's own routes (its clusters, versions, tenant pinning, batch class and
   streaming rules, and its `x-heliostat-served-model`);
3. rewrites the top-level `"model"` of a JSON body to the fallback's name (a model server
   answers 404 to a model it does not serve); Envoy adjusts content-length. Other bytes of
   the body are left exactly as they were.

A request is moved at most once: the program runs once per request, and the fallback's own
routes' metadata is not read again. The functions use the JSON parser of `lua/library.lua`,
whose text comes first in the program.
"""

from __future__ import annotations

from importlib.resources import files

_LUA = files(__package__) / "lua"


def _read(name: str) -> str:
    return (_LUA / name).read_text(encoding="utf-8")


LIBRARY = _read("library.lua")
FALLBACK_FUNCTIONS = _read("fallback.lua")
ENTRY = _read("entry.lua")

SOURCE = LIBRARY + FALLBACK_FUNCTIONS + ENTRY
"""The whole program, as Envoy's Lua filter receives it (one copy per listener)."""
