"""bench/ground_split.py's arithmetic, by hand: the deciders' ground mass, shared as the ground networks share it."""

import torch

from bench.ground_split import labels_of, split_ground


def test_the_ground_mass_is_shared_as_the_ground_networks_share_it():
    # classes: 0 unlabeled, 1 car, 2 road, 3 terrain; ground = road, terrain
    decide = torch.tensor([[0.0, 0.4, 0.5, 0.1], [0.0, 0.9, 0.05, 0.05]])
    ground = torch.tensor([[0.0, 0.6, 0.1, 0.3], [0.1, 0.1, 0.4, 0.4]])
    got = split_ground(decide, ground, [2, 3])
    # point 0: ground mass 0.6; the ground networks share road:terrain as 0.1:0.3 -> 0.15, 0.45; car stays 0.4
    # point 1: ground mass 0.1 shared 1:1 -> 0.05 each; car 0.9
    expected = torch.tensor([[0.0, 0.4, 0.15, 0.45], [0.0, 0.9, 0.05, 0.05]])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(1), decide.sum(1))  # nothing made or lost
    assert labels_of(decide).tolist() == [2, 1] and labels_of(got).tolist() == [3, 1]
    assert decide[0, 3] == 0.1  # the input is not touched


def test_no_ground_share_from_the_ground_networks_leaves_no_ground_and_no_nan():
    decide = torch.tensor([[0.0, 0.5, 0.3, 0.2]])
    ground = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # they see no ground at all
    got = split_ground(decide, ground, [2, 3])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.5, 0.0, 0.0]]))


def test_labels_never_say_unlabeled():
    assert labels_of(torch.tensor([[0.7, 0.1, 0.2, 0.0]])).tolist() == [2]
