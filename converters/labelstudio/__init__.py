"""The one Label Studio adapter, shared by the backend and the converters.

* ``schema``: what a labeling config names (read through the SDK's ``LabelInterface``);
* ``export_reader``: streaming JSON exports;
* ``annotations``: which annotation wins, and annotation → (image, expressions, mask, category) items;
* ``tasks``: prompts from a task (its box) and from an annotator's interactive regions;
* ``regions``: result regions (brush, polygon, rectangle, TextArea) for tasks and predictions;
* ``brush``: Label Studio brush RLE; ``polygons``: polygon regions → masks (export);
* ``media`` / ``fetch`` / ``live``: image references → files or bytes, with the token only for Label Studio.

Dependencies point one way: this package uses ``annotate`` (the engine); the backend and the CLI use it.
"""

from converters.labelstudio.annotations import (MissingExpression, Selection, iter_items, label_to_phrase,
                                                select_annotation, task_to_item)
from converters.labelstudio.export_reader import MalformedExportError, iter_export
from converters.labelstudio.live import LiveProject
from converters.labelstudio.media import FetchedImages, ImageResolveError, ImageResolver, ImageSource, image_size
from converters.labelstudio.regions import (brush_region, prediction_regions, rectangle_region, relation_region,
                                            textarea_region)
from converters.labelstudio.schema import LabelConfigError, LabelSchema

__all__ = [
    "FetchedImages", "ImageResolveError", "ImageResolver", "ImageSource", "LabelConfigError", "LabelSchema", "LiveProject", "MalformedExportError", "MissingExpression",
    "Selection", "brush_region", "image_size", "iter_export", "iter_items", "label_to_phrase", "prediction_regions",
    "rectangle_region", "relation_region", "select_annotation", "task_to_item", "textarea_region",
]
