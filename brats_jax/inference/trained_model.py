"""A trained model for inference: a workdir checkpoint's contract and model, and nothing else.

Only the checkpoint's "contract" (a small JSON item) and "model" items are read, onto the
devices of this machine (any number: restoring goes through the current shardings). No
optimiser is built, and neither config.json nor the metrics log is read.
"""

import dataclasses

from brats_jax import files, sharding
from brats_jax.data import preprocessing
from brats_jax.errors import DataError
from brats_jax.workdir import contract, train_state
from brats_jax.workdir.checkpoints import Checkpoints


@dataclasses.dataclass
class TrainedModel:
  """A checkpoint's model, restored for inference on this machine's devices."""

  config: object  # the ConfigDict the run trained with (from the inference contract)
  contract: dict
  graphdef: object
  variables: dict  # {"params", "model_state"}, replicated on the mesh
  step: int

  def et_threshold(self) -> int:
    """The ET threshold: the config's, or (-1) the one validation chose (contract)."""
    if self.config.eval.min_enhancing_voxels >= 0:
      return int(self.config.eval.min_enhancing_voxels)
    chosen = self.contract["et_threshold"]
    return int(chosen["voxels"]) if chosen else 0


def read_contract(workdir: str, checkpoint: str = "latest") -> tuple:
  """(step, inference contract) of a workdir's checkpoint: latest, best or a step number.
  A small JSON read: nothing else of the checkpoint is opened."""
  if not files.isdir(files.join(workdir, "checkpoints")):
    raise DataError(f"{workdir}: no checkpoints folder; not a brats_jax workdir")
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    steps = checkpoints.all_steps()
    step = {"latest": checkpoints.latest_step, "best": checkpoints.best_step}.get(
        checkpoint, lambda: int(checkpoint) if str(checkpoint).isdigit() else None)()
    if step is None or step not in steps:
      raise DataError(f"{checkpoints.directory}: no {checkpoint} checkpoint (have steps "
                      f"{steps}; --checkpoint takes latest, best or one of them)")
    run_contract = checkpoints.contract(step)
  finally:
    checkpoints.close()
  preprocessing.check_supported(run_contract["preprocessing"],
                                f"{checkpoints.directory}/{step}")
  return step, run_contract


def load_trained_model(workdir: str, checkpoint: str = "latest", mesh=None) -> TrainedModel:
  """The model of a workdir's checkpoint, through its inference contract: only the
  parameters and model state are read, no optimiser is built, no log is read."""
  step, run_contract = read_contract(workdir, checkpoint)
  config = contract.config_of(run_contract)
  mesh = mesh or sharding.make_mesh()
  graphdef, target = train_state.abstract_model(config, mesh)
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    variables = checkpoints.restore_model(step, target)
  finally:
    checkpoints.close()
  return TrainedModel(config, run_contract, graphdef, variables, step)
