"""`heliostat demo`: three regions, real Envoys, a scripted story, and a judge for every act.

The package keeps three things apart so each can be trusted on its own:

- the script and the judges are pure (`story`, `observe`, `board`, `judge`): unit tests replay
  them on made-up measurements without starting anything;
- `runner` and `sampler` start real processes through `heliostat.lab`, send the load and poll
  what the replicas, Envoy and heliostat report;
- `view` (the only module that imports rich) and `report` only present what was measured.
"""
