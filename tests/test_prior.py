"""The trained pose prior: body-frame rotation, vMF-mixture EM, files (ours and the original GIMBAL's), the model."""

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import vonmises_fisher

from gimbal.model.prior import (
    PosePrior,
    PriorFileError,
    canonical_positions,
    fit_prior,
    fit_vmf_mixture,
    heading_baseline,
    load_prior,
    save_prior,
    short_heading,
    vmf_log_normalizer_np,
)
from gimbal.model.skeleton import Skeleton

SHARED = Path(os.environ.get("GIMBAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DANNCE = SHARED / "dannce_markerless_mouse"
needs_dannce = pytest.mark.skipif(not DANNCE.is_dir(), reason=f"DANNCE labelled mice not found at {DANNCE}")

PARENTS = [-1, 0, 1, 1, 0]  # spine base -> spine front -> (head, arm); spine base -> tail
NAMES = ["base", "front", "head", "arm", "tail"]


def _rotz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _poses(rng, T=60, n_states=2, turn=True):
    """A five-keypoint animal with two postures, turning through every heading, and the states it was in."""
    body = {0: np.array([[1.0, 0, 0.1], [0.5, 0, 0.85], [0.6, 0.7, -0.4], [-1, 0, 0.05]]),
            1: np.array([[1.0, 0, 0.3], [0.7, 0, -0.7], [0.3, -0.9, 0.1], [-0.9, 0.3, 0.2]])}
    lengths = np.array([30.0, 15.0, 20.0, 40.0])
    states = rng.integers(n_states, size=T)
    x = np.zeros((T, 5, 3))
    for t in range(T):
        R = _rotz(rng.uniform(0, 2 * np.pi) if turn else 0.0)
        for b, k in enumerate(range(1, 5)):
            mu = body[states[t]][b] / np.linalg.norm(body[states[t]][b])
            u = vonmises_fisher(mu, 200.0).rvs(1, random_state=rng)[0]
            x[t, k] = x[t, PARENTS[k]] + lengths[b] * (R @ u) + rng.normal(0, 0.5, 3)
        x[t] += rng.normal(0, 100, 3) * [1, 1, 0]  # anywhere on the floor
    return x, states


def test_canonical_positions_are_invariant_to_heading_and_match_the_graph():
    import pytensor.tensor as pt

    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, (7, 5, 3))
    axes = np.eye(3)
    turned = x @ _rotz(1.234).T
    a, b = canonical_positions(x, np.array([0, 1]), axes), canonical_positions(turned, np.array([0, 1]), axes)
    np.testing.assert_allclose(np.diff(a, axis=1), np.diff(b, axis=1), atol=1e-9)  # same bone vectors
    heading = a[:, 1] - a[:, 0]
    assert np.all(heading[:, 0] > 0) and np.allclose(heading[:, 1], 0, atol=1e-9)  # the heading is the first axis
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), np.linalg.norm(x, axis=-1))  # a rotation
    xt = pt.tensor3("x")
    graph = canonical_positions(xt, pt.as_tensor(np.array([0, 1])), pt.as_tensor(axes), xp=pt).eval({xt: x})
    np.testing.assert_allclose(graph, a, atol=1e-12)


def test_vmf_mixture_em_recovers_scipy_samples():
    rng = np.random.default_rng(1)
    mus = np.array([[[0, 0, 1.0], [1, 0, 0]], [[0, 1.0, 0], [0, 0, -1.0]]])  # (S=2, B=2, 3)
    kappas = np.array([[50.0, 20.0], [10.0, 80.0]])
    labels = rng.integers(2, size=400)
    u = np.stack([[vonmises_fisher(mus[s, b], kappas[s, b]).rvs(1, random_state=rng)[0] for b in range(2)] for s in labels])
    means, kappa, weights, resp, history = fit_vmf_mixture(u, 2, seed=0)
    order = np.argsort(-means[:, 0, 2])  # state 0 of the truth points up in its first bone
    means, kappa, weights = means[order], kappa[order], weights[order]
    assert np.all(np.einsum("sbd,sbd->sb", means, mus) > 0.99)
    np.testing.assert_allclose(kappa, kappas, rtol=0.2)
    np.testing.assert_allclose(weights, np.bincount(labels) / 400, atol=0.02)
    assert np.all(np.diff(history) > -1e-6)  # EM never lowers the likelihood
    # the normalizer: scipy's density at a direction orthogonal to the mean is log c3(kappa) alone
    kappas_ref = [1e-3, 0.5, 30.0, 900.0]
    np.testing.assert_allclose(vmf_log_normalizer_np(kappas_ref),
                               [vonmises_fisher([0, 0, 1], k).logpdf([1, 0, 0]) for k in kappas_ref], rtol=1e-10)


def test_fit_prior_finds_postures_whatever_the_heading():
    rng = np.random.default_rng(2)
    x, states = _poses(rng, T=200)
    prior = fit_prior(x, PARENTS, [0, 1], n_states=2, keypoint_names=NAMES)
    assigned = prior.state_loglik(x).argmax(axis=1)
    agreement = max(np.mean(assigned == states), np.mean(assigned != states))
    assert agreement > 0.97  # the two postures are told apart although the animal faces every way
    assert np.all(prior.state_concentrations[:, 1:] > 50)  # tight in the body frame (true kappa 200 + noise)
    np.testing.assert_allclose(prior.bone_length[1:], [30, 15, 20, 40], rtol=0.02)
    # in the world frame the same directions are a blur: a one-state world-frame fit is far less concentrated
    world = np.diff(x[:, [0, 1]], axis=1)[:, 0]
    _, kappa_world, *_ = fit_vmf_mixture((world / np.linalg.norm(world, axis=-1, keepdims=True))[:, None], 1)
    assert kappa_world[0, 0] < 2
    # consecutive frames give step variances and transition counts from the data
    assert prior.step_variance is not None and prior.transition_counts.sum() > 2 * 11 + len(x) - 2
    # ... in the world and relative to each keypoint's parent: the per-axis mean square of each kind of step
    rel = x - np.where(np.asarray(PARENTS)[:, None] >= 0, x[:, np.maximum(PARENTS, 0)], 0.0)
    np.testing.assert_allclose(prior.step_variance, np.mean(np.diff(x, axis=0) ** 2, axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(prior.step_variance_parent, np.mean(np.diff(rel, axis=0) ** 2, axis=(0, 2)), rtol=1e-9)
    assert prior.step_variance_parent[0] == prior.step_variance[0]  # the root's is its world step


def _original_npz(path, prior: PosePrior, cameras=3):
    """A file with the original GIMBAL's keys and dtypes (root its own parent, float32, one row of counts)."""
    parents = prior.parents.copy()
    parents[0] = 0
    S, K = prior.state_concentrations.shape
    np.savez(
        path,
        state_directions=prior.state_directions.astype(np.float32),
        state_concentrations=prior.state_concentrations.astype(np.float32),
        state_probability=prior.state_probability.astype(np.float32),
        state_transition_count=np.full(S, 5.0, np.float32),
        pos_radius=prior.bone_length.astype(np.float32),
        pos_radial_variance=prior.bone_variance.astype(np.float32),
        pos_dt_variance=np.full(K, 4.0, np.float32),
        pos_variance_0=np.full(K, 1e8, np.float32),
        obs_inlier_variance=np.full((cameras, K), 9.0, np.float32),
        obs_outlier_probability=np.full((cameras, K), 0.1, np.float32),
        obs_outlier_variance=np.full((cameras, K), 1e4, np.float32),
        camera_matrices=np.zeros((cameras, 3, 4)),
        parents=parents.astype(np.int64),
        crf_keypoints=prior.heading_keypoints.astype(np.int64),
        crf_abscissa=np.array([1, 0, 0], np.float32),
        crf_normal=np.array([0, 0, 1], np.float32),
        pos_radial_covariance=np.eye(3 * K),  # derived matrices: present in real files, ignored
    )


def test_prior_files_round_trip_and_the_original_format_loads_as_is(tmp_path):
    rng = np.random.default_rng(3)
    x, _ = _poses(rng, T=80)
    prior = fit_prior(x, PARENTS, [0, 1], n_states=2, keypoint_names=NAMES, source="test")
    path = save_prior(prior, tmp_path / "p.npz")
    back = load_prior(path)
    assert back.keypoint_names == tuple(NAMES) and back.source == "test"
    for name in ("state_directions", "state_concentrations", "bone_length", "bone_variance", "step_variance",
                 "step_variance_parent"):
        np.testing.assert_allclose(getattr(back, name), getattr(prior, name), rtol=1e-6)  # float32 on disk
    np.testing.assert_allclose(back.transition_counts, prior.transition_counts)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_prior(prior, path)
    _original_npz(tmp_path / "orig.npz", prior)
    orig = load_prior(tmp_path / "orig.npz")
    assert orig.keypoint_names is None and orig.parents.tolist() == PARENTS
    np.testing.assert_allclose(orig.transition_counts, np.full((2, 2), 5.0))  # one row of counts for every state
    np.testing.assert_allclose(orig.step_variance, 4.0)
    assert orig.step_variance_parent is None  # the original's files carry world steps only
    skel = Skeleton(tuple(NAMES), tuple(PARENTS))
    assert orig.for_skeleton(skel).keypoint_names == tuple(NAMES)  # nameless: matched by the tree
    with pytest.raises(PriorFileError, match="tree must be the dataset's"):
        orig.for_skeleton(Skeleton(("a", "b", "c", "d", "e"), (-1, 0, 0, 1, 0)))
    np.savez(tmp_path / "bad.npz", parents=np.zeros(3, np.int64))
    with pytest.raises(PriorFileError, match="lacks"):
        load_prior(tmp_path / "bad.npz")
    with pytest.raises(PriorFileError, match="does not exist"):
        load_prior(tmp_path / "missing.npz")


def test_a_named_prior_is_matched_to_a_skeleton_by_name():
    rng = np.random.default_rng(4)
    x, _ = _poses(rng, T=60)
    prior = fit_prior(x, PARENTS, [0, 1], n_states=1, keypoint_names=NAMES)
    # the same tree with the keypoints listed in another (still topological) order
    order = ["base", "tail", "front", "arm", "head"]
    skel = Skeleton(tuple(order), (-1, 0, 0, 2, 2))
    moved = prior.for_skeleton(skel)
    idx = [NAMES.index(n) for n in order]
    np.testing.assert_allclose(moved.bone_length, prior.bone_length[idx])
    np.testing.assert_allclose(moved.state_directions, prior.state_directions[:, idx])
    assert [order[h] for h in moved.heading_keypoints] == ["base", "front"]
    with pytest.raises(PriorFileError, match="not a bone of the prior"):
        prior.for_skeleton(Skeleton(("base", "front", "head", "arm", "tail"), (-1, 0, 1, 2, 0)))
    with pytest.raises(PriorFileError, match="no keypoint"):
        prior.for_skeleton(Skeleton(("base", "front", "paw"), (-1, 0, 1)))


def _dataset_from(x, rng, noise=1.0):
    from gimbal.datasets import from_arrays
    from gimbal.model.cameras import project

    cams = []
    for az in (0.0, 2.1, 4.2):
        R = np.array([[np.cos(az), np.sin(az), 0], [0, 0, -1.0], [-np.sin(az), np.cos(az), 0]])
        t = np.array([0, 0, 600.0])
        cams.append(np.array([[1000, 0, 640], [0, 1000, 360], [0, 0, 1.0]]) @ np.c_[R, t])
    cams = np.stack(cams)
    obs = project(x, cams) + rng.normal(0, noise, (len(x), 3, x.shape[1], 2))
    return from_arrays(obs, cams, PARENTS, keypoint_names=NAMES, image_size=(1280, 720), positions_true=x)


def _term(model, name, point):
    """A model term's value at a point of its value variables."""
    import pytensor

    (out,) = model.replace_rvs_by_values([model[name]])
    f = pytensor.function(model.value_vars, out, on_unused_input="ignore")
    return float(f(*[point[v.name] for v in model.value_vars]))


def test_model_with_a_prior_scores_body_frame_directions():
    """The pose term of build_model(prior=...) equals the marginal bone density of the rotated pose (numpy)."""
    from gimbal.model.build import build_model

    rng = np.random.default_rng(5)
    x, _ = _poses(rng, T=12)
    x -= x.mean(axis=(0, 1)) * [1, 1, 0]
    prior = fit_prior(_poses(np.random.default_rng(6), T=120)[0], PARENTS, [0, 1], n_states=2, keypoint_names=NAMES)
    ds = _dataset_from(x, rng)
    model = build_model(ds, use_directional_hmm=False, temporal=False, prior=prior)
    assert model.gimbal_config.heading and model.gimbal_config.n_states == 2
    point = model.initial_point()
    pose = _term(model, "pose_prior", point)
    xc = canonical_positions(point["x"], prior.heading_keypoints, prior.axes)
    delta = xc[:, 1:] - xc[:, np.asarray(PARENTS)[1:]]  # (T, B, 3)
    rho = np.exp(point["bone_length_log__"])
    sigma2 = prior.bone_variance[1:]
    mu, kappa = prior.state_directions[:, 1:], prior.state_concentrations[:, 1:]
    eta = kappa[None, ..., None] * mu[None] + (rho / sigma2)[None, None, :, None] * delta[:, None]  # (T, S, B, 3)
    per_bone = (vmf_log_normalizer_np(kappa)[None] - vmf_log_normalizer_np(np.linalg.norm(eta, axis=-1))
                - 1.5 * np.log(2 * np.pi * sigma2) - (np.sum(delta**2, -1)[:, None] + rho**2) / (2 * sigma2))
    expected = np.logaddexp.reduce(per_bone.sum(-1) + np.log(prior.state_probability)[None], axis=1).sum()
    np.testing.assert_allclose(pose, expected, rtol=1e-9)
    # the same animal turned about the vertical: the pose term does not change (the prior is egocentric)
    turned = build_model(_dataset_from(x @ _rotz(2.0).T, rng), use_directional_hmm=False, temporal=False, prior=prior)
    p2 = turned.initial_point()
    p2["x"] = point["x"] @ _rotz(2.0).T
    p2["bone_length_log__"] = point["bone_length_log__"]
    pose2 = _term(turned, "pose_prior", p2)
    np.testing.assert_allclose(pose2, pose, rtol=1e-9)


def test_a_prior_gives_the_step_sizes_of_the_frame_the_model_steps_in(tmp_path):
    """A trained prior's step sizes replace the data's in the frame the model takes each step in; an original GIMBAL
    file (world steps only) serves step_frame='world' and 'auto' (in the world) and refuses 'parent', naming the fix."""
    from pytensor.graph.basic import ancestors

    from gimbal.model.build import build_model

    rng = np.random.default_rng(7)
    x, _ = _poses(rng, T=30)
    prior = fit_prior(_poses(np.random.default_rng(8), T=120)[0], PARENTS, [0, 1], n_states=2, keypoint_names=NAMES)
    ds = _dataset_from(x, rng)
    for frame in ("world", "parent", "auto"):
        model = build_model(ds, prior=prior, step_frame=frame, validate=False)
        rel = model.gimbal_step_relative
        expect = {"world": np.zeros(len(PARENTS), bool), "parent": np.asarray(PARENTS) >= 0,
                  "auto": (np.asarray(PARENTS) >= 0) & (prior.step_variance_parent < prior.step_variance)}[frame]
        np.testing.assert_array_equal(rel, expect)
        walk = next(p for p in model.potentials if p.name == "temporal_prior")
        sizes = next(v for v in ancestors([walk]) if v.name == "step_sigma_fixed").eval()
        np.testing.assert_allclose(sizes, np.sqrt(np.where(rel, prior.step_variance_parent, prior.step_variance)))
    _original_npz(tmp_path / "orig.npz", prior)
    auto = build_model(ds, prior=tmp_path / "orig.npz", step_frame="auto", validate=False)
    assert not auto.gimbal_step_relative.any()
    with pytest.raises(ValueError, match="step sizes relative to each keypoint's parent, and the pose prior has none"):
        build_model(ds, prior=tmp_path / "orig.npz", step_frame="parent", validate=False)


def test_a_prior_in_other_units_is_refused():
    from pytensor.graph.basic import ancestors

    from gimbal.model.build import build_model

    rng = np.random.default_rng(7)
    x, _ = _poses(rng, T=10)
    prior = fit_prior(x / 10.0, PARENTS, [0, 1], n_states=1, keypoint_names=NAMES)  # cm against mm data
    with pytest.raises(PriorFileError, match="other units"):
        build_model(_dataset_from(x, rng), temporal=False, prior=prior, validate=False)


@needs_dannce
def test_label3d_mice_load_with_ground_truth_and_train_a_prior(tmp_path):
    from gimbal.io.label3d import Label3DFileError, load_label3d
    from gimbal.model.cameras import project

    skeleton = DANNCE / "mouse22_skeleton.mat"
    ds = load_label3d(DANNCE / "markerless_mouse_1" / "label3d_dannce.mat", skeleton)
    yaml_skeleton = Path(__file__).resolve().parents[1] / "examples" / "skeletons" / "sleap_anipose_mouse.yaml"
    with pytest.raises(Label3DFileError, match="joint_names"):  # the labels' order is only in DANNCE's skeleton
        load_label3d(DANNCE / "markerless_mouse_1" / "label3d_dannce.mat", yaml_skeleton)
    assert ds.sizes == {**ds.sizes, "frame": 81, "camera": 6, "keypoint": 22}
    resid = np.linalg.norm(project(ds["positions_true"].values, ds["camera_matrix"].values) - ds["observations"].values, axis=-1)
    assert np.nanmax(resid) < 1e-4  # the undistorted 2D labels are the 3D labels' pinhole projections
    names = [str(k) for k in ds["keypoint"].values]
    prior = fit_prior(ds["positions_true"].values, ds["parents"].values, [names.index("SpineM"), names.index("Snout")],
                      n_states=4, keypoint_names=names, consecutive=False)
    assert prior.step_variance is None and np.all(np.isfinite(prior.state_concentrations))
    # the heading-aligned spine is tighter than the same bone in the world frame (the mouse turns)
    k = names.index("SpineM")
    spine = ds["positions_true"].values[:, 0] - ds["positions_true"].values[:, k]
    ok = np.isfinite(spine).all(-1)
    _, kappa_world, *_ = fit_vmf_mixture((spine[ok] / np.linalg.norm(spine[ok], axis=-1, keepdims=True))[:, None], 1)
    with pytest.warns(UserWarning, match="heading baseline"):  # SpineM -> SpineF (the root): short when rearing
        one = fit_prior(ds["positions_true"].values, ds["parents"].values, [k, 0], n_states=1, keypoint_names=names,
                        consecutive=False)
    assert one.state_concentrations[0, k] > 3 * kappa_world[0, 0]
    path = save_prior(prior, tmp_path / "mouse1.npz")
    other = load_label3d(DANNCE / "markerless_mouse_2" / "label3d_dannce.mat", skeleton)
    from gimbal.datasets import skeleton_of

    assert load_prior(path).for_skeleton(skeleton_of(other)).n_states == 4


@needs_dannce
def test_cli_imports_label3d_fits_a_prior_and_refuses_what_cannot_serve(tmp_path, capsys):
    """`gimbal import` of a Label3D file, `gimbal prior fit`, and `gimbal fit --prior` usage errors (status 2)."""
    from gimbal.cli import main

    mat, skeleton = DANNCE / "markerless_mouse_1" / "label3d_dannce.mat", DANNCE / "mouse22_skeleton.mat"
    nc, prior = tmp_path / "mouse1.nc", tmp_path / "prior.npz"
    assert main(["import", "--detections", str(mat), "--calibration", str(mat), "--skeleton", str(skeleton),
                 "--out", str(nc)]) == 0
    assert main(["import", "--detections", str(mat), "--calibration", str(mat), "--out", str(tmp_path / "x.nc")]) == 2
    assert "--skeleton" in capsys.readouterr().err
    assert main(["prior", "fit", "--dataset", str(nc), "--heading", "SpineM,Snout", "--states", "2",
                 "--out", str(prior)]) == 0
    out = capsys.readouterr().out
    assert "2 pose states on 81 frames" in out and "not fitted: frames not consecutive" in out
    assert load_prior(prior).keypoint_names[0] == "SpineF"
    assert main(["prior", "fit", "--dataset", str(nc), "--heading", "SpineM,Snout", "--out", str(prior)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prior", "fit", "--dataset", str(nc), "--heading", "SpineM,Nose", "--out", str(tmp_path / "y.npz")]) == 2
    assert "Nose" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="heading baseline"):  # the rearing mouse's spine, seen from above
        assert main(["prior", "fit", "--dataset", str(nc), "--heading", "SpineM,SpineF", "--out",
                     str(tmp_path / "z.npz")]) == 0
    # a prior of another skeleton is a usage error before anything is built or sampled
    other = fit_prior(_poses(np.random.default_rng(8), T=30)[0], PARENTS, [0, 1], keypoint_names=NAMES)
    save_prior(other, tmp_path / "other.npz")
    assert main(["fit", "--dataset", str(nc), "--prior", str(tmp_path / "other.npz"), "--out", str(tmp_path / "fit")]) == 2
    assert "--prior" in capsys.readouterr().err and not (tmp_path / "fit").exists()


def test_short_heading_frames_are_named_when_a_prior_meets_a_recording():
    """heading_baseline is the floor-plane distance of the two heading keypoints in the prior's frame; frames under
    25% of its median are short, and building a model with a prior warns naming them."""
    from gimbal.datasets import load_dataset, skeleton_of
    from gimbal.model.build import build_model

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3, 3))
    axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # vertical = world x
    lengths = heading_baseline(x, [2, 0], axes)
    assert np.allclose(lengths, np.hypot(x[:, 0, 1] - x[:, 2, 1], x[:, 0, 2] - x[:, 2, 2]))
    lengths[2] = 0.01 * np.median(lengths)
    lengths[4] = np.nan
    assert short_heading(lengths).tolist() == [False, False, True, False, False, False]
    ds = load_dataset("v0.2.1_L00_minimal", max_T=40)  # root -> proximal stands nearly upright in its first frames
    skel = skeleton_of(ds)
    with pytest.warns(UserWarning, match="heading baseline"):
        prior = fit_prior(ds["positions_true"].values, list(skel.parents), [0, 1], keypoint_names=list(skel.names))
    with pytest.warns(UserWarning, match=r"heading baseline \(root -> proximal\).*this recording's frames at the "
                                         r"chains' start \(frames? 1[,;]"):
        build_model(ds, prior=prior)


def test_gimbal_fit_with_a_prior_checks_its_body_frame(tmp_path, capsys):
    """`gimbal fit --prior`: the summary carries the heading check at the posterior mean against the unconverged
    frames, and the printout names the body frame exactly when the check traces them to it."""
    import json
    import warnings

    from gimbal.cli import main
    from gimbal.datasets import load_dataset, skeleton_of

    ds = load_dataset("v0.2.1_L00_minimal", max_T=200)
    skel = skeleton_of(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # root -> proximal stands upright in a few frames
        prior = fit_prior(ds["positions_true"].values, list(skel.parents), [0, 1], n_states=2,
                          keypoint_names=list(skel.names))
    path = save_prior(prior, tmp_path / "prior.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Gaussian steps in the world: the posterior mean of this short run kept the truth's upright frames 0-2 in
        # most runs (with the default Student-t steps its shortest baseline there was 0.51x the median, with Gaussian
        # steps in the default frame ("auto") 0.55x, and in one run of this setting 0.48x)
        assert main(["fit", "--dataset", "v0.2.1_L00_minimal", "--max-T", "8", "--prior", str(path), "--chains", "2",
                     "--tune", "100", "--draws", "50", "--steps", "gaussian", "--step-frame", "world", "--quiet",
                     "--out", str(tmp_path / "fit")]) == 0
    out = capsys.readouterr().out
    heading = json.loads((tmp_path / "fit" / "summary.json").read_text())["heading"]
    assert heading["keypoints"] == ["root", "proximal"] and heading["n_frames"] == 8
    # only the truth's upright frames can be short, and they are listed exactly when the shortest baseline is below
    # the check's 0.25x (whether this 8-frame, 50-draw run's mean keeps them upright varies with the sampler's path)
    assert set(heading["short_frames"]) <= {0, 1, 2}
    assert bool(heading["short_frames"]) == (heading["min_length"] < 0.25 * heading["median_length"])
    assert set(heading["unconverged_frames"]) <= set(range(8))
    assert ("body frame:" in out) == heading["traced"]


@needs_dannce
def test_label3d_2d_labels_are_named_exact_reprojections_not_detections():
    """Label3D's 2D labels are the 3D labels' reprojections (residual ~1e-10 px): fitting the model to them pins every
    position to the 0.1 px noise floor. build_model says so, and a diagnostic group's sampling finding on them is
    traced there (its quick group 3 on mouse 2 had read "core kinematics ill-conditioned", E-BFMI 0.04). The same
    labels with 2 px of detector-like noise raise nothing."""
    import warnings

    from gimbal.diagnostics.rules import Verdict
    from gimbal.divergence import rules as study_rules
    from gimbal.io.label3d import load_label3d
    from gimbal.model.build import build_model

    ds = load_label3d(DANNCE / "markerless_mouse_2" / "label3d_dannce.mat", DANNCE / "mouse22_skeleton.mat")
    with pytest.warns(UserWarning, match=r"exact reprojections of 3D points \(median triangulation residual"):
        model = build_model(ds, validate=False)
    residual = model.gimbal_init.triangulation_residual_px
    assert residual < 1e-6
    finding = Verdict("finding", "core_ill_conditioned", "3 divergent draws.", "Reparameterize.", ("divergences",))
    v = study_rules.rule_exact_labels(finding, residual)
    assert v.code == "exact_reprojections" and v.problems[-1] == "exact_reprojections"
    assert v.interpretation.startswith("3 divergent draws. The 2D points are exact reprojections")
    assert "gimbal prior fit --source truth" in v.next_action and v.next_action.endswith("Reparameterize.")
    assert study_rules.rule_exact_labels(finding, None) is finding  # runs before the residual was recorded
    noisy = ds.copy(deep=True)
    noisy["observations"].values += np.random.default_rng(0).normal(scale=2.0, size=noisy["observations"].shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = build_model(noisy, validate=False)
    assert study_rules.rule_exact_labels(finding, model.gimbal_init.triangulation_residual_px) is finding
