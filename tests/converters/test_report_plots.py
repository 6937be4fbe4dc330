"""The report's pure parts: the confusion matrix and the score pairs behind the scatter (numbers worked by hand)."""

from __future__ import annotations

import numpy as np

from converters.report_plots import confusion_matrix, html_page, score_pairs

GT = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},  # class 0
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10]},  # class 1
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [80, 0, 10, 10]},  # class 1, never found
    ],
}


def det(category: int, box: list[float], score: float) -> dict[str, object]:
    return {"image_id": 1, "category_id": category, "bbox": box, "score": score}


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    detections = [
        det(1, [0, 0, 10, 10], 0.9),  # right class
        det(1, [50, 50, 10, 10], 0.8),  # class 1 called class 0
        det(2, [30, 30, 10, 10], 0.7),  # nothing there: background row
        det(2, [0, 0, 10, 10], 0.1),  # below the score: ignored
    ]
    matrix = confusion_matrix(GT, detections, num_classes=2, score=0.5)
    expected = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]])
    assert (matrix == expected).all(), matrix


def test_score_pairs_match_same_class_overlapping_boxes() -> None:
    source = [det(1, [0, 0, 10, 10], 0.9), det(2, [50, 50, 10, 10], 0.6), det(2, [80, 0, 10, 10], 0.3)]
    converted = [det(1, [0, 0, 10, 11], 0.85), det(1, [50, 50, 10, 10], 0.6), det(2, [80, 0, 10, 10], 0.02)]
    pairs = score_pairs(source, converted)
    assert pairs.tolist() == [[0.9, 0.85]], "class 1 vs 2 is no pair; a score under 0.05 is not drawn"


def test_html_page_links_the_plots_and_escapes() -> None:
    page = html_page({"model": "/x/m<1>.tflite", "quantization": "int8"}, "| a | b |", ["pr_curves.png"])
    assert '<img src="pr_curves.png"' in page and "m&lt;1&gt;.tflite" in page and "| a | b |" in page
