"""Fetal head biometry: an ultrasound frame -> whole-frame mask -> ellipse -> HC, BPD, OFD, GA.

The frame is resized as a whole to the model's input (``ImagePreprocess``, crop ``none``), the
probability is resized back onto the source grid, and an ellipse is fitted to where it crosses
the threshold on the edge of the largest region, holes filled (``engine/ellipse.py``). Lengths
are in mm only with a pixel spacing from the DICOM header or given by the caller
(``pixel_size_mm``); otherwise they stay in pixels, and the result says so. Golden inputs are compared as masks, like segmentation.
"""
from __future__ import annotations

import dataclasses

from ..cautions import ResultWarning
from ..ellipse import HADLOCK_HC_CM, fit_ellipse, head_measurements, head_outline
from ..errors import ConfigurationError, InvalidInputError
from ..io import dicom
from ..io.image import ImageStudy, read_image
from ..preprocess import check_image, decode_size, image_to_tensor, map_to_source
from ..results import FetalHeadResult
from .base import MeasureOptions
from .segmentation import SegmentationTask

PIXEL_SIZE_OPTION = "pixel_size_mm / --pixel-size"
AGREE = 0.01  # a given pixel size may differ from the DICOM's by 1 % (rounding), not more


class FetalHeadTask(SegmentationTask):
    name = "fetal_head"
    options_type = MeasureOptions
    result_type = FetalHeadResult
    metrics = ("dice_hc",)  # Dice and HC error (export/guards.HcGuard)

    def options(self, **given) -> MeasureOptions:
        return super(SegmentationTask, self).options(**given)

    def read(self, source, options: MeasureOptions) -> ImageStudy:
        study = read_image(source, frame=options.frame, min_size=decode_size(self.spec, self.decode_margin))
        stated = dicom.pixel_spacing_mm(study.source) if study.kind == "dicom" else None
        given = options.pixel_size_mm
        if stated and given and any(abs(s - given) > AGREE * s for s in stated[0]):
            raise ConfigurationError(f"pixel size {given} mm was given but {study.source} states "
                                     f"{stated[0][0]:.4g} x {stated[0][1]:.4g} mm ({stated[1]})",
                                     expected="one pixel spacing", fix=f"drop {PIXEL_SIZE_OPTION} for a DICOM that states it")
        if stated:
            spacing, where = stated
        elif given:
            spacing, where = (given, given), f"given ({PIXEL_SIZE_OPTION})"
        else:
            spacing, where = None, "none"
        return dataclasses.replace(study, meta=study.meta | {"pixel_spacing_mm": spacing, "spacing_source": where})

    def preprocess(self, study: ImageStudy, options: MeasureOptions) -> tuple[dict, dict]:
        check_image(study.pixels, self.spec)
        tensor, geometry = image_to_tensor(study.pixels, self.spec, study.reduction)
        return {self.input_name: tensor}, {"geometry": geometry, "spacing": study.meta["pixel_spacing_mm"],
                                           "spacing_source": study.meta["spacing_source"]}

    def postprocess(self, outputs: dict, meta: dict) -> dict:
        grid = self.scores(outputs)[0, 0]
        probability = map_to_source(grid, meta["geometry"])
        threshold = next(iter(self.manifest.postprocess.thresholds.values()))
        spacing, warnings = meta["spacing"], []
        if spacing is None:
            warnings.append(ResultWarning("no_pixel_spacing", "no pixel spacing (DICOM (0028,0030) Pixel Spacing, (0018,6011) ultrasound regions, "
                            f"or {PIXEL_SIZE_OPTION}): lengths are in pixels, no gestational age"))
        try:
            points = head_outline(probability, threshold)
            ellipse = fit_ellipse(points)
            measurements = head_measurements(points, spacing)
        except InvalidInputError as exc:  # no outline: the mask is still a result, without measurements
            ellipse, measurements = None, {}
            warnings.append(ResultWarning("no_measurement", f"no ellipse could be fitted to the mask ({exc.what})"))
        if measurements.get("head_circumference_mm") is not None and measurements["gestational_age_weeks"] is None:
            warnings.append(ResultWarning("outside_formula_range", f"HC {measurements['head_circumference_mm'] / 10:.1f} cm is outside the Hadlock formula's "
                            f"range ({HADLOCK_HC_CM[0]}-{HADLOCK_HC_CM[1]} cm): no gestational age"))
        return {"probability": probability, "thresholds": dict(self.manifest.postprocess.thresholds),
                "ellipse": ellipse, "measurements": measurements, "pixel_spacing_mm": spacing,
                "spacing_source": meta["spacing_source"], "warnings": tuple(warnings)}
