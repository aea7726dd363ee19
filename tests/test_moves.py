"""Metropolis moves between explanations (gimbal.model.moves): candidates from the data, exact density ratios."""

import numpy as np
import pytest

from gimbal.datasets import from_arrays, load_dataset
from gimbal.model.build import build_model
from gimbal.model.cameras import camera_matrix, intrinsics, look_at, project
from gimbal.model.moves import ExplanationMoves, explanation_blocks
from gimbal.settings import STEP_DOF


def _log_ratio_and_full(model, step, point, block, carry, logp):
    ratio, moved_x = step.log_ratio(point, block, carry)
    return ratio, logp({**point, "x": moved_x}) - logp(point), moved_x


@pytest.fixture(scope="module")
def realistic():
    return load_dataset("rodent18_realistic", max_T=60)


@pytest.mark.parametrize("hmm", [True, False])
def test_each_move_ratio_is_the_full_log_density_ratio(realistic, hmm):
    """The local ratio (per-frame terms, the HMM by the forward algorithm) equals the model's logp difference."""
    from benchmarks.observation import train_prior

    # with the HMM: the default model with a trained prior (4 states); without: one state, frames independent
    model = (build_model(realistic, prior=train_prior(4), steps="gaussian", step_frame="world") if hmm
             else build_model(realistic, use_directional_hmm=False, steps="gaussian", step_frame="world"))
    blocks = explanation_blocks(realistic)
    kinds = {b.kind for b in blocks}
    assert kinds == {"groups", "ray", "camera"}
    step = ExplanationMoves(vars=[model.rvs_to_values[model["x"]]], blocks=blocks, parents=realistic["parents"].values,
                            model=model)
    assert step.hmm == hmm
    logp = model.compile_logp()
    point = model.initial_point()
    chosen = [b for b in blocks if b.kind == "ray"][:3] + [b for b in blocks if b.kind == "groups"][:8]
    chosen += [b for b in blocks if b.kind == "camera"][:6]
    chosen += [b for b in blocks if b.first == 0][:2]  # the root anchor and the HMM's first frame
    for block in chosen:
        for carry in (False, True):
            ratio, full, moved_x = _log_ratio_and_full(model, step, point, block, carry, logp)
            assert np.isfinite(full)
            assert ratio == pytest.approx(full, abs=1e-6, rel=1e-9)
            # an involution: the same move from the moved point comes back
            back, _, again = _log_ratio_and_full(model, step, {**point, "x": moved_x}, block, carry, logp)
            np.testing.assert_allclose(again, point["x"], atol=1e-9)
            assert back == pytest.approx(-ratio, abs=1e-6)
    # a round of many moves rated in turn (forward messages carried past accepted moves, backward ones from the
    # round's start): the accepted moves' ratios add up to the model's logp difference
    for accept_every in (1, 2):
        step.rng = np.random.default_rng(0)
        (round_,) = [r for r in step._deal()][:1]
        assert round_[0].size > 5
        x, terms, log_trans = step._start(point)
        decision = (np.arange(1, round_[0].size + 1) % accept_every == 0).astype(int)
        accepted, rated = step._round(point, x, terms, round_, log_trans, decision=decision)
        assert accepted == decision.sum()
        kept = float(np.sum(rated[decision == 1]))
        assert kept == pytest.approx(logp({**point, "x": x}) - logp(point), abs=1e-6)
    # Metropolis decisions: a move is kept exactly when log(u) < its ratio (u from the step's generator)
    step.rng = np.random.default_rng(1)
    idx, coins = step._deal()[0]
    x, terms, log_trans = step._start(point)
    twin = np.random.Generator(type(step.rng.bit_generator)())
    twin.bit_generator.state = step.rng.bit_generator.state
    log_u = np.log(twin.random(idx.size))
    accepted, rated = step._round(point, x, terms, (idx, coins), log_trans)
    expect = np.isfinite(rated) & (log_u < rated)
    assert 0 < accepted == expect.sum() < idx.size
    x0 = np.asarray(point["x"])
    for m, i in enumerate(idx):
        block = blocks[i]
        assert np.any(x[block.frames, block.keypoint] != x0[block.frames, block.keypoint]) == expect[m]


def test_move_ratios_with_student_t_steps(realistic):
    """With heavy-tailed steps (the default) of the random walk the moves rate the steps into and out of a block with the Student-t
    density: the local ratio still equals the model's logp difference, forwards and back."""
    model = build_model(realistic, use_directional_hmm=False, step_frame="world")  # the default steps: Student-t
    blocks = explanation_blocks(realistic)
    step = ExplanationMoves(vars=[model.rvs_to_values[model["x"]]], blocks=blocks, parents=realistic["parents"].values,
                            model=model)
    assert step.step_dof == STEP_DOF  # the default's degrees of freedom, as the model's walk uses them
    logp = model.compile_logp()
    point = model.initial_point()
    chosen = [b for b in blocks if b.kind == "groups"][:6] + [b for b in blocks if b.first == 0][:1]
    for block in chosen:
        for carry in (False, True):
            ratio, full, moved_x = _log_ratio_and_full(model, step, point, block, carry, logp)
            assert np.isfinite(full) and full != 0
            assert ratio == pytest.approx(full, abs=1e-6, rel=1e-9)
            back, _, _ = _log_ratio_and_full(model, step, {**point, "x": moved_x}, block, carry, logp)
            assert back == pytest.approx(-ratio, abs=1e-6)


def test_moves_act_on_positions_under_whitened_tracks(realistic):
    """With whitened tracks the moves map the sampler's coordinates to positions and back: a move's ratio is still
    the model's log density difference, and a step returns the sampler's coordinates."""
    from gimbal.model.whitening import to_coordinates

    part = realistic.isel(frame=slice(0, 20))
    # every track ("still": none here)
    model = build_model(part, use_directional_hmm=False, whitened_tracks="all", step_frame="world")
    blocks = explanation_blocks(part)
    step = ExplanationMoves(blocks=blocks, model=model)
    assert step.var_names == ("x_whitened__",) and step.whitening is not None
    logp = model.compile_logp()
    point = model.initial_point()
    np.testing.assert_allclose(step.positions(point), model.gimbal_init.values["x"], atol=1e-9)
    for block in blocks[:6]:
        ratio, moved = step.log_ratio(point, block, carry=True)
        moved_point = {**point, "x_whitened__": to_coordinates(moved, *step.whitening)}
        assert ratio == pytest.approx(float(logp(moved_point)) - float(logp(point)), abs=1e-6, rel=1e-9)
    step.rng = np.random.default_rng(0)
    new_point, stats = step.step(point)
    assert set(new_point) == set(point) and stats[0]["moves_accepted"] > 0
    assert not np.allclose(new_point["x_whitened__"], point["x_whitened__"])


def test_two_camera_groups_make_one_block_whose_move_swaps_their_points():
    """Cameras 0 and 1 see the point at A, cameras 2 and 3 at B: one block, reflecting A onto B."""
    K_ = intrinsics(800.0, 320.0, 240.0)
    cams = []
    for az in (0.0, 90.0, 180.0, 270.0):
        a = np.radians(az)
        R, t = look_at(np.array([1500 * np.cos(a), 1500 * np.sin(a), 400.0]), np.zeros(3))
        cams.append(camera_matrix(K_, R, t))
    cams = np.stack(cams)
    T = 5
    truth = np.zeros((T, 2, 3))
    truth[:, 1] = [60.0, 0.0, 0.0]  # keypoint 1, 60 mm from the root
    obs = project(truth, cams)  # (T, C, K, 2)
    b_point = np.array([60.0, 0.0, 150.0])  # 150 mm above A: 74-80 px from it in every camera, so that no point
    # between A and B is within the 20 px threshold of three cameras (at (60, 120, 90), 32 px from A in camera 1, a
    # correctly normalized DLT finds a compromise that cameras 1-3 support; the unnormalized one missed it)
    obs[2, 2:, 1] = project(b_point[None], cams[2:])[:, 0]
    ds = from_arrays(obs, cams, parents=[-1, 0], keypoint_names=["root", "tip"])
    blocks = explanation_blocks(ds, rays=False, cameras=False)
    assert len(blocks) == 1
    (block,) = blocks
    assert block.keypoint == 1 and block.frames.tolist() == [2]
    a_point = truth[2, 1]
    reflected = a_point - 2 * np.dot(a_point - block.anchor[0], block.normal[0]) * block.normal[0]
    np.testing.assert_allclose(reflected, b_point, atol=1e-6)


def test_moves_refuse_a_model_they_cannot_rate(realistic):
    model = build_model(realistic, scales="learned", step_frame="world")
    with pytest.raises(ValueError, match="scales='fixed'"):
        ExplanationMoves(vars=[model.rvs_to_values[model["x"]]], blocks=explanation_blocks(realistic),
                         parents=realistic["parents"].values, model=model)
    relative = build_model(realistic)  # the default frame: on this rodent its keypoints step relative to their parent
    assert relative.gimbal_step_relative.any()
    with pytest.raises(ValueError, match="build the model with step_frame='world'"):
        ExplanationMoves(blocks=explanation_blocks(realistic), model=relative)


def test_moves_need_pymcs_compound_sampler(realistic):
    from gimbal.model.fitting import sample_model

    model = build_model(realistic.isel(frame=slice(0, 5)), step_frame="world")
    with pytest.raises(ValueError, match="sampler='pymc'"):
        sample_model(model, moves=explanation_blocks(realistic.isel(frame=slice(0, 5))), progress=False)
    with pytest.raises(ValueError, match="jitter=True with moves"):  # the compound sampler would silently not jitter
        sample_model(model, sampler="pymc", jitter=True, moves=explanation_blocks(realistic.isel(frame=slice(0, 5))),
                     progress=False)
