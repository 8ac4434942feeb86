"""The trainer's parts: one step's loss and SGD update (:mod:`~armlib.training.step`), checkpoints and exact
resume (:mod:`~armlib.training.checkpoint`) and torchrun's ranks (:mod:`~armlib.training.distributed`).
:func:`armlib.train.train` wires them into one run."""
