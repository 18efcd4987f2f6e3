"""bench/compare_roots.py: the first root (the real scans) read whole, the others thinned; the parser's defaults."""

from bench.compare_roots import roots_parser, scans_by_root
from m2s_training.synth import generate


def test_the_first_root_is_read_whole_and_the_others_every_nth_scan(tmp_path):
    generate(tmp_path / "real", ["00"], preset="tiny", scans=4, seed=1)
    generate(tmp_path / "synthetic", ["00", "01"], preset="tiny", scans=4, seed=2)
    roots = [tmp_path / "real", tmp_path / "synthetic"]

    counted = {root.name: len(list(scans)) for root, scans in scans_by_root(roots, every=3)}
    assert counted == {"real": 4, "synthetic": 4}  # 4 scans; scans 0 and 3 of each of two sequences

    thinned = {root.name: len(list(scans)) for root, scans in scans_by_root(roots, every=3, first_whole=False)}
    assert thinned == {"real": 2, "synthetic": 4}


def test_the_parser_takes_the_statistics_defaults():
    args = roots_parser("a statistic", every=8, band=(15.0, 30.0)).parse_args(["a", "b"])
    assert (args.every, args.near, args.far) == (8, 15.0, 30.0)
    assert [str(r) for r in args.roots] == ["a", "b"]
    no_band = roots_parser(None, every=16).parse_args(["a", "--every", "2"])
    assert no_band.every == 2 and not hasattr(no_band, "near")
