"""`heliostat demo`: three regions, real Envoys, a scripted story, and a judge for every act.

The package keeps three things apart so each can be trusted on its own:

- the script and the judges are pure (`story`, `capacity`, `observe`, `judge`, `board`,
  `outcome`): unit tests replay them on made-up measurements without starting anything;
- `runner`, `load` and `sampler` start real processes through `heliostat.lab`, send the
  load and poll what the replicas, Envoy and heliostat report;
- `report` (plain lines) and `view` (rich, the only module that imports it) present what
  was measured; `command` is the CLI's entry point.
"""
