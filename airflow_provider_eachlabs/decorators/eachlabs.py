"""``@task.eachlabs(model=...)``: a TaskFlow function computes a model's input; the task buys it.

The decorated function returns the input as a dict. At execute time it is called with its arguments
(``op_args``/``op_kwargs``, templated as in ``@task``, and any context keys it names); then the task
is the operator's: the input is checked (flux-fill-pro by the model page's rules exactly as
``FluxFillOperator`` checks them, files uploaded the same way; any other model against its published
schema, as ``EachlabsPredictionOperator`` does), bought once under the re-run rule, waited for
(deferrable by default as configured), stored under ``output_path``, and the operator's XCom result
returned. Every other argument is the operator's.

Module level imports only ``airflow.sdk``'s decorator base (``from airflow.sdk import task`` has
loaded it already) and the operators, which are cheap: DAG files import this at every parse.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator

    from airflow_provider_eachlabs.record import TaskRecord

FLUX_FILL_MODEL = "flux-fill-pro"
DECORATOR_NAME = "@task.eachlabs"
RETURN_RULE = "must return the model's input as a dict of field names to values"
# FluxFillOperator requires prompt and image when a DAG is parsed; here they come from the function.
_FROM_THE_FUNCTION = "(the decorated function's return value, at execute time)"
# The operator's templated arguments, less the input, which the function computes.
# FluxFillInput's fields (inputs.py, imported only at execute time): arguments of FluxFillOperator that
# @task.eachlabs takes from the function's return value instead.
_FILL_FIELDS = (
    "prompt",
    "image",
    "mask",
    "seed",
    "steps",
    "prompt_upsampling",
    "guidance",
    "safety_tolerance",
    "output_format",
)
_OPERATOR_FIELDS = tuple(f for f in EachlabsPredictionOperator.template_fields if f not in ("model", "input"))


def _input_returned(operator: DecoratedOperator, context: Context) -> dict[str, Any]:
    """Call the decorated function as ``@task`` does and check that it returned an input object."""
    from airflow.sdk.definitions.context import context_merge

    from airflow_provider_eachlabs.exceptions import EachlabsInputError

    context_merge(context, operator.op_kwargs)
    value = operator.python_callable(*operator.op_args, **operator.determine_kwargs(context))
    task = f"{DECORATOR_NAME} task {operator.task_id!r}"
    if not isinstance(value, Mapping):
        raise EachlabsInputError(
            "input",
            value,
            f"{task} returned a {type(value).__name__}, not a dict: its function {RETURN_RULE}",
        )
    for key in value:
        if not isinstance(key, str):
            raise EachlabsInputError(
                "input",
                value,
                f"{task} returned a dict with the {type(key).__name__} key {key!r}: its function "
                f"{RETURN_RULE}, and field names are strings",
            )
    return dict(value)


def _refuse_model_mismatch(model: Any, fill: bool) -> None:
    if (model == FLUX_FILL_MODEL) != fill:
        raise TypeError(
            f"{DECORATOR_NAME}: model={model!r} needs the decorator made for it: write "
            f"@task.eachlabs(model={model!r}) rather than changing model with .override() or .partial()"
        )


class EachlabsDecoratedOperator(DecoratedOperator, EachlabsPredictionOperator):
    """``@task.eachlabs`` for any model but flux-fill-pro: the function's dict is the ``input``,
    checked against the model's published schema before anything is bought."""

    custom_operator_name: str = DECORATOR_NAME
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, "model", *_OPERATOR_FIELDS)
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_input_argument(kwargs)
        _refuse_model_mismatch(kwargs.get("model"), fill=False)
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)
        _refuse_async(self)

    def build_input(self, context: Context, record: TaskRecord) -> dict[str, Any]:
        self.input = _input_returned(self, context)
        return super().build_input(context, record)


class FluxFillDecoratedOperator(DecoratedOperator, FluxFillOperator):
    """``@task.eachlabs(model="flux-fill-pro")``: the function's dict holds ``FluxFillOperator``'s
    model parameters (prompt, image, mask, seed, steps, ...), checked and uploaded exactly as that
    operator checks and uploads them; a field left out takes the model page's default."""

    custom_operator_name: str = DECORATOR_NAME
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *_OPERATOR_FIELDS)
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        model: str = FLUX_FILL_MODEL,
        **kwargs: Any,
    ) -> None:
        _refuse_input_argument(kwargs)
        _refuse_model_mismatch(model, fill=True)
        from_the_function = sorted(set(kwargs) & set(_FILL_FIELDS))
        if from_the_function:
            raise TypeError(
                f"{DECORATOR_NAME}: {from_the_function[0]} is a model input: return it from the "
                "decorated function, with the rest of the input"
            )
        if kwargs.get("preview_path"):
            raise TypeError(
                f"{DECORATOR_NAME} does not write previews (preview_path): use FluxFillOperator for a "
                "before | mask | after preview"
            )
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            prompt=_FROM_THE_FUNCTION,
            image=_FROM_THE_FUNCTION,
            **kwargs,
        )
        _refuse_async(self)
        # Known once the function has run, or, in a resumed task, from what was sent.
        self._expected_format: str | None = None

    def build_input(self, context: Context, record: TaskRecord) -> dict[str, Any]:
        """Take the function's fields as ``FluxFillOperator``'s parameters, then build as it does."""
        from dataclasses import MISSING, fields

        from airflow_provider_eachlabs.exceptions import EachlabsInputError
        from airflow_provider_eachlabs.inputs import FluxFillInput

        returned = _input_returned(self, context)
        defaults = {f.name: None if f.default is MISSING else f.default for f in fields(FluxFillInput)}
        for name in returned:
            if name not in defaults:
                raise EachlabsInputError(
                    name,
                    returned[name],
                    f"is not a {FLUX_FILL_MODEL} input; its fields: {', '.join(defaults)}",
                )
        for name, default in defaults.items():
            setattr(self, name, returned.get(name, default))
        body = super().build_input(context, record)
        self._expected_format = body["output_format"]
        return body

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """A resumed task has not run the function: the output format asked for is the one sent."""
        self._expected_format = _sent_output_format(context)
        return super().execute_complete(context, event)

    def expected_output_format(self) -> str | None:
        return self._expected_format


def _refuse_input_argument(kwargs: Mapping[str, Any]) -> None:
    if "input" in kwargs:
        raise TypeError(f"{DECORATOR_NAME} takes no input=: the decorated function returns the input")


def _refuse_async(operator: DecoratedOperator) -> None:
    if operator.is_async:
        raise TypeError(f"{DECORATOR_NAME} needs a plain function, not an async one ({operator.task_id!r})")


def _sent_output_format(context: Context) -> str | None:
    """The output format the prediction was bought with: from the task's record (Airflow 3.3+), else
    from the request this try pushed to XCom before deferring. None leaves it unchecked."""
    from airflow_provider_eachlabs.record import TaskRecord
    from airflow_provider_eachlabs.results import REQUEST_KEY

    sent = TaskRecord.load(context).sent_input
    if sent is None:
        ti = context["ti"]
        try:
            request = ti.xcom_pull(task_ids=ti.task_id, key=REQUEST_KEY, map_indexes=ti.map_index)
        except Exception:  # an XCom backend that cannot answer: the format goes unchecked
            request = None
        sent = request.get("input") if isinstance(request, Mapping) else None
    value = sent.get("output_format") if isinstance(sent, Mapping) else None
    return value if isinstance(value, str) else None


def eachlabs_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """Wrap a function that returns a model's input into an Eachlabs prediction task.

    Usage::

        @task.eachlabs(model="flux-fill-pro", output_path="s3://bucket/filled/")
        def fill(photo: str) -> dict:
            return {"prompt": "an empty meadow", "image": photo, "mask": photo + ".mask.png"}

    ``model`` is required; every other argument is ``EachlabsPredictionOperator``'s (``deferrable``,
    ``output_path``, ``timeout``, ``fresh_prediction``, ...) or ``BaseOperator``'s. The task returns
    the operator's XCom result, one value (the function's ``-> dict`` annotation describes the input,
    so it does not unroll the result into several XComs; pass ``multiple_outputs=True`` for that).
    """
    if "model" not in kwargs:
        raise TypeError(f"{DECORATOR_NAME} needs model=, e.g. @task.eachlabs(model={FLUX_FILL_MODEL!r})")
    operator_class = (
        FluxFillDecoratedOperator if kwargs["model"] == FLUX_FILL_MODEL else EachlabsDecoratedOperator
    )
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=bool(multiple_outputs),
        decorated_operator_class=operator_class,
        **kwargs,
    )
