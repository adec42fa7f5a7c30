"""Traffic planning: which clusters one region's Envoys get and where each kind of request goes.

Pure domain logic between the control law (`heliostat.balance`) and translation to Envoy
protos (`heliostat.xds.translate`): the plan names every cluster a view derives (per version,
per tenant) and says what each one is, so translation and the admin state read the same
answer and nobody parses cluster names back.
"""

from heliostat.planning.plan import Derivation, Kind, ModelPlan, Plan, Target, plan

__all__ = ["Derivation", "Kind", "ModelPlan", "Plan", "Target", "plan"]
