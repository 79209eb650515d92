"""vlmwatch on this machine, in three parts (one concept, one home):

* :mod:`vlmwatch_local.cloud`: the local cloud: provisioning from ``template.yaml`` on moto, the
  event-source loops that play AWS, and :class:`~vlmwatch_local.cloud.stack.LocalStack`, the one stack
  class (moto + the emulator + the loops, served on ports or all in this process);
* :mod:`vlmwatch_local.emulator`: the VLM Run emulator (a small router over plain route functions; its
  config, state and faults each in a module of their own);
* :mod:`vlmwatch_local.harness`: the experiments (bench, chaos, perf, coldstart), sharing one clock
  (:class:`~vlmwatch_local.harness.clock.Clock`) and running on ``LocalStack``.

``python -m vlmwatch_local <command>`` runs them (see ``__main__``).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: template.yaml, functions/, samples/, docs/
