import numpy as np
import pytest

from m2s_perception.labels import IGNORE_ID, load_label_map, parse_label_map


@pytest.fixture(scope="module")
def label_map():
    return load_label_map()


def test_nineteen_classes_plus_ignore(label_map):
    assert label_map.num_classes == 20
    assert label_map.class_names[0] == "unlabeled"
    assert label_map.class_names[1] == "car" and label_map.class_names[19] == "traffic-sign"


def test_moving_and_merged_raw_ids_map_to_training_classes(label_map):
    raw = np.array([10, 252, 254, 30, 13, 257, 60, 40, 52, 99, 1, 0, 258])
    expected = np.array([1, 1, 6, 6, 5, 5, 9, 9, 0, 0, 0, 0, 4])
    np.testing.assert_array_equal(label_map.to_train(raw), expected)


def test_unknown_raw_id_is_ignored_not_garbage(label_map):
    assert label_map.to_train(np.array([12345]))[0] == IGNORE_ID


def test_inverse_map_round_trips_every_training_id(label_map):
    train = np.arange(label_map.num_classes)
    np.testing.assert_array_equal(label_map.to_train(label_map.to_raw(train)), train)
    assert label_map.to_raw(np.array([6]))[0] == 30  # person is written as the static raw id


def test_colours_are_rgb_from_the_bgr_reference(label_map):
    # car is BGR [245, 150, 100] in the reference file
    assert tuple(label_map.train_rgb[1]) == (100, 150, 245)
    assert tuple(label_map.raw_rgb_lut[252]) == (100, 150, 245)


def test_split_and_hard_classes(label_map):
    assert label_map.sequences("train") == ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
    assert label_map.sequences("val") == ("08",)
    assert len(label_map.sequences("test")) == 11
    hard = {label_map.class_names[i] for i in label_map.hard_class_ids()}
    assert {"person", "pole", "traffic-sign", "trunk", "bicyclist"} <= hard


def test_inconsistent_inverse_map_is_rejected():
    doc = {
        "labels": {0: "unlabeled", 10: "car"},
        "color_map": {0: [0, 0, 0], 10: [1, 2, 3]},
        "learning_map": {0: 0, 10: 1},
        "learning_map_inv": {0: 0, 1: 0},
    }
    with pytest.raises(ValueError, match="does not map back"):
        parse_label_map(doc)
