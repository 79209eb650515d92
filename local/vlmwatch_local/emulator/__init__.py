"""A VLM Run API emulator: a local HTTP server that speaks the agent-execution API and does real,
deterministic work on the files it is given.

It is a Flask (WSGI) app, so tests can reach it in-process through ``httpx.WSGITransport`` and the
local stack can serve it on a port. Behaviour is configurable per run (:class:`EmulatorConfig`, or
``POST /_emulator/config``) and per request (``X-Emulator-*`` headers on ``POST /agent/execute``, or
a directive in the input file's name: ``fail``, ``stuck``, ``unfetchable`` — a fetch error quoting the
URL, as real ones do). Every request served is counted (``GET /_emulator/stats``).

The account's bad days, for the whole account until lifted: a service outage (503 on every API route,
:meth:`Emulator.outage`), no credits left (402 on ``POST /agent/execute`` after ``credits_executions``
executions, :meth:`Emulator.top_up`), a revoked key (401 everywhere, :meth:`Emulator.revoke_key` /
:meth:`Emulator.restore_key`); each also settable through ``POST /_emulator/config``, and each counted
while active (requests served, requests refused, the windows) in the stats. Executions echo the
``inputs`` (and inline ``config``) they were created with unless ``echo_inputs`` is off.

One module per concern:

* :mod:`.config`: :class:`EmulatorConfig`, every knob;
* :mod:`.schema`: the request shapes, as strict as the official SDK's models;
* :mod:`.state`: what the account holds (executions, files, uploads, artifacts) and what it served;
* :mod:`.faults`: what answers a request instead of its route, and the account faults' record;
* :mod:`.analysis`: the real work on a file (facts, artifacts, or why it cannot be read);
* :mod:`.service`: :class:`Emulator`, the state, the clock, executions moving and calling back;
* :mod:`.routes`: the route functions, their table, and the Flask app built from it.
"""

from vlmwatch_local.emulator.analysis import InputError
from vlmwatch_local.emulator.config import EmulatorConfig
from vlmwatch_local.emulator.service import Emulator, sign

__all__ = ["Emulator", "EmulatorConfig", "InputError", "sign"]
