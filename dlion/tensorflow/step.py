"""The one TF gradient path: combine a step's gradients across ranks, then apply them.

Both optimizer wrappers (the custom-loop :class:`dlion.DistributedOptimizer` and the
``model.fit`` :class:`dlion.keras.DistributedOptimizer`) run every step through
:class:`DistributedStep`, so each feature exists once and both have all of them:

* gradients: ``None`` ones are left out (their variables are not updated), ``IndexedSlices``
  become dense; every rank must pass gradients for the same variables (checked at the first
  step of each layout);
* eagerly: the gradients are fused and exchanged (:class:`.exchanger.GradientExchanger`), and
  the fused buffers go into TF once; the split, reshape, cast and the wrapped optimizer's apply
  run as one compiled function per layout (``compile_apply``), or eagerly;
* inside a ``tf.function`` (``model.fit``'s step, or a user's own): one ``tf.py_function`` takes
  the gradients and returns the combined buffers and whether to apply, and the apply runs in the
  graph under ``tf.cond``;
* ``nonfinite``: ``"raise"`` or ``"skip"`` (every rank skips the step), both ways;
* policies that change the parameters (:class:`dlion.OuterSync`) get their hooks around the
  apply (:mod:`.parameters`);
* ``dlion.join``: a rank that has joined applies the active ranks' combined gradients with the
  variables it last applied for that layout;
* the timeline records each eager step.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from .. import timeline
from ..exchange import Exchange
from . import fusion
from .exchanger import GradientExchanger, check_gradients, evict_oldest, var_name
from .parameters import ParameterHooks


class DistributedStep:
    """Exchange-then-apply for one wrapped Keras optimizer (see the module docstring)."""

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        exchange: Exchange | None,
        *,
        fusion_bytes: int,
        name: str,
        caller: str,
        nonfinite: str,
        compile_apply: bool = True,
    ) -> None:
        self.optimizer = optimizer
        self.exchanger = GradientExchanger(exchange, fusion_bytes, name, caller, nonfinite)
        self.exchanger.joined_apply = self._joined_apply
        self.hooks = ParameterHooks(self.exchanger.exchange, name)
        self.compile_apply = bool(compile_apply)
        self.apply_fns: dict[tuple, Any] = {}  # compiled applies, one per layout and variables
        self._joined_vars: dict[tuple, list[Any]] = {}  # dlion.join: last variables per layout

    @property
    def exchange(self) -> Exchange:
        """The exchange policy in use."""
        return self.exchanger.exchange

    # -- the step -------------------------------------------------------------------------------
    def apply(self, grads: list[Any], variables: list[Any]) -> None:
        """Combine ``grads`` across ranks and apply them to ``variables`` (eagerly or in a
        graph); a step that every rank skips (``nonfinite="skip"``) applies nothing."""
        keep, dense, names = self._present(grads, variables)
        kept = [variables[i] for i in keep]
        if not tf.executing_eagerly():
            self._graph_apply(dense, kept, names)
            return
        tl = timeline.active()
        started = tl.step_begin() if tl is not None else 0.0
        self.hooks.before(kept)
        plan = self.exchanger.exchange_step(dense, names)
        if plan is not None:  # else skipped on every rank (nonfinite="skip")
            if plan.layout not in self._joined_vars:
                evict_oldest(self._joined_vars)
            self._joined_vars[plan.layout] = kept
            with timeline.span("apply", "apply"):
                self._apply_plan(plan, kept)
        self.hooks.after(kept)  # also after a skipped step: every rank counts it
        if tl is not None:
            tl.step_end(started, optimizer=self.exchanger.name, step=self.exchanger.steps)

    def reduce(self, grads: list[Any], variables: list[Any]) -> list[Any] | None:
        """The combined gradients, in order (``None`` stays ``None``), eagerly or in a graph;
        ``None`` instead of the list when every rank skips the step (eagerly only)."""
        keep, dense, names = self._present(grads, variables)
        if tf.executing_eagerly():
            combined = self.exchanger.reduce(dense, names)
            if combined is None:
                return None
        else:
            combined, _ = self.exchanger.graph_reduce(dense, names)
        out: list[Any] = [None] * len(grads)
        for i, g in zip(keep, combined):
            out[i] = g
        return out

    def _present(self, grads: list[Any], variables: list[Any]) -> tuple[list[int], list, list]:
        """The indices, dense gradients and variable names of the gradients that are not None;
        anything but a TF tensor (a numpy array, a list) is refused, naming it."""
        names_all = [var_name(v, i) for i, v in enumerate(variables)]
        check_gradients(grads, names_all, f"{self.exchanger.caller} at step {self.exchanger.steps}")
        keep = [i for i, g in enumerate(grads) if g is not None]
        dense = [tf.convert_to_tensor(grads[i]) for i in keep]  # IndexedSlices -> dense
        return keep, dense, [names_all[i] for i in keep]

    def flush(self) -> None:
        """Apply what the policy still has in flight (:class:`dlion.OuterSync` with overlap)."""
        self.hooks.flush()

    # -- eagerly --------------------------------------------------------------------------------
    def _apply_plan(self, plan: fusion.FusionPlan, variables: list[Any]) -> None:
        if self.compile_apply:
            flats = [tf.convert_to_tensor(g.buffer) for g in plan.groups]
            self._compiled_apply(plan, variables)(flats)
            return
        out: list[Any] = [None] * len(variables)
        for group in plan.groups:
            plan.unpack(group, out)
        pairs = [(g, v) for g, v in zip(out, variables) if g is not None]
        if not self.optimizer.built:
            self.optimizer.build([v for _, v in pairs])
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def _joined_apply(self, plan: fusion.FusionPlan) -> None:
        """dlion.join: this rank has joined; apply the active ranks' combined gradients too."""
        variables = self._joined_vars.get(plan.layout)
        if variables is None:  # this layout was never applied here: nothing to keep in step
            return
        with timeline.span("apply", "apply", joined=True):
            self._apply_plan(plan, variables)

    def _compiled_apply(self, plan: fusion.FusionPlan, variables: list[Any]) -> Any:
        """A concrete function (one per plan and variable list) that applies the fused buffers."""
        key = (plan.layout, *(id(v) for v in variables))
        fn = self.apply_fns.get(key)
        if fn is not None:
            return fn
        applied = [variables[s.index] for g in plan.groups for s in g.slots]
        if not self.optimizer.built:
            self.optimizer.build(applied)  # slot variables are made eagerly, once
        opt = self.optimizer

        def apply(flats: list[tf.Tensor]) -> None:
            grads = []
            for group, flat in zip(plan.groups, flats):
                parts = tf.split(flat, [s.size for s in group.slots])
                grads += [
                    tf.cast(tf.reshape(p, s.shape), s.dtype) for p, s in zip(parts, group.slots)
                ]
            opt.apply(grads, applied)

        # A concrete function: calling it skips tf.function's per-call signature matching.
        specs = [tf.TensorSpec([g.buffer.size], tf.as_dtype(g.dtype)) for g in plan.groups]
        evict_oldest(self.apply_fns)
        fn = self.apply_fns[key] = tf.function(apply).get_concrete_function(specs)
        return fn

    # -- inside a tf.function ---------------------------------------------------------------------
    def _graph_apply(self, grads: list[tf.Tensor], variables: list[Any], names: list[str]) -> None:
        token = self.hooks.before(variables)
        with tf.control_dependencies([] if token is None else [token]):
            combined, applied = self.exchanger.graph_reduce(grads, names)
        try:  # dlion.join needs the variables of this layout, known from the static shapes
            self._joined_vars[fusion.layout_of(grads, names)] = variables
        except (TypeError, ValueError):
            pass
        opt = self.optimizer

        def apply() -> tf.Tensor:
            opt.apply(combined, variables)
            return tf.constant(True)

        tf.cond(applied, apply, lambda: tf.constant(False))
        self.hooks.after(variables)
