"""FluxFillOperator: flux-fill-pro inpainting with the model page's parameters, checked before sending.

Only ``airflow.sdk`` and the generic operator load when a DAG file imports this; validation, uploads
and HTTP load inside ``execute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction
    from airflow_provider_eachlabs.record import TaskRecord
    from airflow_provider_eachlabs.storage import ImageFile


class FluxFillOperator(EachlabsPredictionOperator):
    """Fill the masked part of an image with flux-fill-pro.

    :param prompt: what to paint into the masked region.
    :param image: the image: a public https URL, a local path, ``file://`` or an object-storage URI
        (files are uploaded first). May carry an alpha mask.
    :param mask: black keeps, white is filled; same size as the image. Optional when the image has an
        alpha channel.
    :param seed: integer for reproducible fills.
    :param steps: diffusion steps, 1 to 50 (default 50).
    :param prompt_upsampling: let the model rewrite the prompt (default False).
    :param guidance: prompt adherence, 2 to 5 (default 3).
    :param safety_tolerance: 1 (strictest) to 6 (default 2).
    :param output_format: ``jpg`` (default) or ``png``.
    :param preview_path: where to write a before | mask | after PNG (needs Pillow); a folder-like
        path gets ``<prediction id>-preview.png``. Templated.

    Every other argument is ``EachlabsPredictionOperator``'s. All model parameters are templated and
    validated after rendering; text that templates render (``"30"``, ``"true"``) is read as the
    number or boolean it spells.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "image",
        "mask",
        "seed",
        "steps",
        "prompt_upsampling",
        "guidance",
        "safety_tolerance",
        "output_format",
        "webhook_url",
        "webhook_secret",
        "output_path",
        "eachlabs_conn_id",
        "output_name",
        "preview_path",
        "fresh_prediction",
        "max_cost",
        "cost_per_prediction",
    )

    def __init__(
        self,
        *,
        prompt: str,
        image: str,
        mask: str | None = None,
        seed: int | None = None,
        steps: int = 50,
        prompt_upsampling: bool = False,
        guidance: float = 3,
        safety_tolerance: int = 2,
        output_format: str = "jpg",
        preview_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model="flux-fill-pro", **kwargs)
        if preview_path and not self.wait_for_completion:
            from airflow_provider_eachlabs.exceptions import EachlabsInputError

            raise EachlabsInputError(
                "preview_path",
                preview_path,
                "is never written with wait_for_completion=False (the task ends before the output exists)",
            )
        self.prompt = prompt
        self.image = image
        self.mask = mask
        self.seed = seed
        self.steps = steps
        self.prompt_upsampling = prompt_upsampling
        self.guidance = guidance
        self.safety_tolerance = safety_tolerance
        self.output_format = output_format
        self.preview_path = preview_path
        self._input_bytes: dict[str, bytes] = {}

    def build_input(self, context: Context, record: TaskRecord) -> dict[str, Any]:
        """Validate every field and read every file input, then upload (reusing an earlier try's uploads).

        All checks come before the first request, so bad input costs no upload and no prediction.
        Without a mask, the image's alpha channel becomes one, sent explicitly (see ``masks``).
        """
        from dataclasses import fields

        from airflow_provider_eachlabs.inputs import FluxFillInput, is_web_reference
        from airflow_provider_eachlabs.masks import mask_from_alpha
        from airflow_provider_eachlabs.storage import check_fill_inputs, load_image, upload_image

        rendered = {field.name: getattr(self, field.name) for field in fields(FluxFillInput)}
        body = FluxFillInput.validate(**rendered, api_host=self.hook.host).to_api()
        files = {
            field: load_image(field, body[field])
            for field in ("image", "mask")
            if body.get(field) and not is_web_reference(body[field])
        }
        if "mask" not in body:
            files["mask"] = mask_from_alpha(files.get("image") or self._image_at(body["image"]))
            self.log.info("No mask given: the image's alpha channel is sent as the mask (transparent = fill)")
        if "mask" in files:  # a mask given by URL is the API's to check
            check_fill_inputs(files.get("image"), files["mask"])
        for image in files.values():
            body[image.field] = upload_image(self.hook.upload_bytes, image, record.uploads, self.log)
            self._input_bytes[image.field] = image.content
        return body

    def _image_at(self, url: str) -> ImageFile:
        """An image given by URL, fetched with the output download's rules (public https, size cap)."""
        from airflow_provider_eachlabs.exceptions import EachlabsInputError
        from airflow_provider_eachlabs.imageinfo import read_image_info
        from airflow_provider_eachlabs.storage import ImageFile

        content = self.fetch(url)
        info = read_image_info(content)
        if info is None:
            raise EachlabsInputError("image", url, "must be a JPEG, PNG or WebP image (its bytes are not)")
        return ImageFile("image", url, content, info)

    def review_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "seed": self.seed, "guidance": self.guidance}

    def apply_review_changes(self, changes: dict[str, Any]) -> None:
        for name in ("prompt", "seed", "guidance"):
            if name in changes:
                setattr(self, name, changes[name])

    def expected_output_format(self) -> str | None:
        return str(self.output_format)

    def output_locations(self) -> dict[str, str]:
        locations = super().output_locations()
        if self.preview_path:
            locations["preview_path"] = str(self.preview_path)
        return locations

    def finish(self, context: Context, prediction: Prediction) -> dict[str, Any]:
        result = super().finish(context, prediction)
        if self.preview_path and prediction.output_url:
            result["preview_path"] = self._write_preview(prediction, prediction.output_url)
        return result

    def _write_preview(self, prediction: Prediction, output_url: str) -> str:
        from airflow_provider_eachlabs.exceptions import EachlabsError, EachlabsStorageError
        from airflow_provider_eachlabs.inputs import is_web_reference
        from airflow_provider_eachlabs.preview import write_preview
        from airflow_provider_eachlabs.storage import output_target, read_source, reason

        def load(field: str, source: str) -> bytes:
            if field in self._input_bytes:
                return self._input_bytes[field]
            return self.fetch(source) if is_web_reference(source) else read_source(field, source)

        mask = load("mask", str(self.mask)) if self.mask else None
        # In a folder, named by the prediction (or output_name), so one run does not overwrite another's.
        target = output_target(str(self.preview_path), f"{self.file_stem(prediction)}-preview", "png")
        try:
            path = write_preview(target, load("image", str(self.image)), mask, self.fetch(output_url))
        except EachlabsError:
            raise
        except Exception as error:
            raise EachlabsStorageError(
                f"Prediction {prediction.id} succeeded and its output is kept, but the preview could not "
                f"be written to {target} ({reason(error)}); the task's next try draws it without buying "
                "another prediction.",
                prediction_id=prediction.id,
                output_url=output_url,
            ) from None
        self.log.info("Wrote a before | mask | after preview to %s", path)
        return path

    def openlineage_input_files(self) -> list[Any]:
        """The rendered ``image`` and ``mask``, the files OpenLineage names as the fill's inputs."""
        return [self.image, self.mask]
