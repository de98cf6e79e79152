import math

import pytest
import torch

from prefdiff.objectives import DPOObjective, SFTObjective


def test_loss_is_ln2_when_policy_equals_reference():
    """policy == reference => inside = 0 => loss = -log sigmoid(0) = ln 2; accuracy counts the tie as 0.5."""
    err_w = torch.tensor([0.3, 1.2])
    err_l = torch.tensor([0.5, 0.1])
    out = DPOObjective(beta=5000.0)(err_w, err_l, err_w.clone(), err_l.clone())
    assert out.loss.item() == pytest.approx(math.log(2))
    assert out.metrics["implicit_acc"].item() == pytest.approx(0.5)
    assert out.metrics["reward_margin"].item() == pytest.approx(0.0)
    assert out.metrics["negative_margin_share"].item() == 0.0  # a tie is not negative


def test_dpo_values_worked_by_hand():
    """beta = 2000.

    Pair 1: e_w=0.100, ref_w=0.101 -> winner term -0.001; e_l=0.200, ref_l=0.2005 -> loser term -0.0005.
            inside = -0.5*2000*(-0.001 - (-0.0005)) = -1000 * -0.0005 = 0.5
            loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077
    Pair 2: e_w=0.300, ref_w=0.299 -> +0.001; e_l=0.050, ref_l=0.050 -> 0.
            inside = -1000 * 0.001 = -1.0; loss = log(1 + e^1) = 1.313262
    mean loss = 0.893669; accuracy = (1 + 0)/2 = 0.5; margin = (0.5 - 1.0)/2 = -0.25
    winner term mean = 0; loser term mean = -0.00025
    """
    out = DPOObjective(beta=2000.0)(
        torch.tensor([0.100, 0.300], dtype=torch.float64),
        torch.tensor([0.200, 0.050], dtype=torch.float64),
        torch.tensor([0.101, 0.299], dtype=torch.float64),
        torch.tensor([0.2005, 0.050], dtype=torch.float64),
    )
    assert out.loss_per_pair.tolist() == pytest.approx([0.474077, 1.313262], abs=1e-6)
    assert out.loss.item() == pytest.approx(0.893669, abs=1e-6)
    assert out.metrics["implicit_acc"].item() == pytest.approx(0.5)
    assert out.metrics["reward_margin"].item() == pytest.approx(-0.25, abs=1e-9)
    assert out.metrics["negative_margin_share"].item() == pytest.approx(0.5)  # pair 2 only
    assert out.metrics["winner_term"].item() == pytest.approx(0.0, abs=1e-12)
    assert out.metrics["loser_term"].item() == pytest.approx(-0.00025, abs=1e-12)


def test_dpo_gradient_pushes_winner_error_down_and_loser_up():
    """d loss / d e_w = 0.5*beta*sigmoid(-inside) > 0 (descent lowers e_w); d loss / d e_l is its negative.
    At inside = 0 with beta = 4 and one pair: 0.5*4*0.5 = 1.0."""
    err_w = torch.tensor([0.5], requires_grad=True)
    err_l = torch.tensor([0.5], requires_grad=True)
    DPOObjective(beta=4.0)(err_w, err_l, torch.tensor([0.5]), torch.tensor([0.5])).loss.backward()
    assert err_w.grad.item() == pytest.approx(1.0)
    assert err_l.grad.item() == pytest.approx(-1.0)


def test_dpo_needs_reference_and_losers():
    objective = DPOObjective()
    assert objective.needs_reference and objective.needs_losers
    with pytest.raises(ValueError, match="reference"):
        objective(torch.zeros(1), torch.zeros(1), None, None)


def test_sft_is_winner_error_mean():
    """SFT: loss = mean(e_w) = (0.2 + 0.4) / 2 = 0.3; losers and reference are ignored."""
    objective = SFTObjective()
    assert not objective.needs_reference and not objective.needs_losers
    out = objective(torch.tensor([0.2, 0.4]), None, None, None)
    assert out.loss.item() == pytest.approx(0.3)
