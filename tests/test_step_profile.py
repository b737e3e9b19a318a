"""experiments/step_profile.py: which of the step's operations are the attention's, their profiled times, errors."""

import json

import jax
import jax.numpy as jnp
import pytest
from conftest import load_repo_module

step_profile = load_repo_module('experiments/step_profile.py')

HLO = '''HloModule m

%fused_computation (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %m = f32[4]{0} multiply(%p, %p), metadata={op_name="jit(step)/transpose(jvp(Net))/layer1/0/attention/mul"}
}

%fused_computation.1 (q: f32[4]) -> f32[4] {
  %q = f32[4]{0} parameter(0)
  ROOT %n = f32[4]{0} negate(%q), metadata={op_name="jit(step)/jvp(Net)/layer1/0/bn1/neg"}
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0), metadata={op_name="x"}
  %in_body = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_computation
  %elsewhere = f32[4]{0} fusion(%in_body), kind=kLoop, calls=%fused_computation.1
  %own = f32[4]{0} add(%elsewhere, %x), metadata={op_name="jit(step)/jvp(Net)/layer1/0/bn3/add"}
  ROOT %not_a_module = f32[4]{0} add(%own, %x), metadata={op_name="jit(step)/jvp(Net)/attention_like/add"}
}
'''


def test_operations_are_scoped_by_their_own_or_their_bodys_metadata():
  # The fusion counts through its body; bn3 (where PFCA is fused in ResNets) by its own metadata;
  # bn1 and a name that only starts like the scope do not.
  assert step_profile.scoped_operations(HLO) == {'in_body', 'own'}
  assert step_profile.scoped_operations(HLO, r'/bn1/') == {'elsewhere'}


def test_a_compiled_attention_is_found_and_its_profiled_operations_timed(tmp_path):
  import flax.linen as nn
  from pfca_jax.models.attention import PFCA

  class Net(nn.Module):
    name_of_attention: str

    @nn.compact
    def __call__(self, x):
      return jnp.sum(jnp.square(PFCA(name=self.name_of_attention)(nn.Conv(8, (3, 3))(x))))

  x = jnp.ones((2, 8, 8, 3))
  steps = {}
  for name in ('attention', 'other'):
    net = Net(name)
    params = net.init(jax.random.PRNGKey(0), x)
    steps[name] = jax.jit(jax.grad(lambda p, net=net: net.apply(p, x)))
  assert not step_profile.scoped_operations(steps['other'].lower(params).compile().as_text())
  grad = steps['attention']
  scoped = step_profile.scoped_operations(grad.lower(params).compile().as_text())
  assert scoped
  jax.block_until_ready(grad(params))
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    jax.block_until_ready(grad(params))
  times = step_profile.thunk_times(str(tmp_path), scoped)
  assert times and set(times) <= scoped and all(t > 0 for t in times.values())
  with pytest.raises(RuntimeError, match='no perfetto trace'):
    step_profile.thunk_times(str(tmp_path / 'empty'), scoped)


@pytest.mark.parametrize('args, message', [
    (['--benchmark=vgg'], "--benchmark='vgg': vgg; valid: resnet18"),
    (['--benchmark=cifar_resnet20,msrresnet_x4'], 'one benchmark a run'),
    (['--attentions=pfca,cbam'], "--attentions='pfca,cbam': cbam; valid: none, pfca"),
    (['--scope=('], "--scope='(' is not a regular expression"),
    (['--rounds=0'], '--rounds and --steps must be >= 1'),
    (['--side=16', '--benchmark=resnet50'], '--side=16 is below what resnet50 takes'),
])
def test_bad_arguments_fail_in_one_line_before_compiling(args, message, capsys):
  assert step_profile.main(args) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and message in err and err.count('\n') == 1


def test_a_run_profiles_each_attention_against_none(tmp_path, capsys):
  out = tmp_path / 'profile.json'
  assert step_profile.main(['--benchmark=cifar_resnet20', '--attentions=none,pfca', '--rounds=2', '--side=8',
                            '--batch-size=8', f'--json={out}']) == 0
  rows = {r['attention']: r for r in json.loads(out.read_text())['rows']}
  # PFCA is fused into each block's bn2, which `none` has too: in scope for both, more operations with PFCA.
  assert 0 < rows['none']['scoped_operations'] < rows['pfca']['scoped_operations']
  for r in rows.values():
    assert len(r['step_s_rounds']) == 2
    assert all(t > 0 for t in r['timed_s_rounds'])
    assert all(0 < a <= t for a, t in zip(r['scoped_s_rounds'], r['timed_s_rounds']))
  assert 'own_share_median' not in rows['none'] and len(rows['pfca']['own_share_rounds']) == 2
  report = capsys.readouterr().out
  assert 'own work over none' in report and 'ms per step by operation kind' in report


def test_the_report_pairs_attentions_round_by_round():
  def row(name, own=None):
    r = {'attention': name, 'step_s_rounds': [1.0] * 6, 'timed_s_rounds': [0.5] * 6, 'scoped_s_rounds': [0.1] * 6,
         'scoped_operations': 3, 'kinds_s': {'ynn_fusion': 0.25}}
    if own is not None:
      r.update(own_share_rounds=own, own_share_median=sorted(own)[3], own_share_ci95=(min(own), max(own)),
               step_paired_median=0.1, step_paired_ci95=None)
    return r

  rows = [row('none'), row('pfca', [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]),
          row('se', [0.03, 0.03, 0.03, 0.03, 0.03, 0.03])]
  report = step_profile.format_report(rows, top=1)
  # Differences -2..+3 points: median +0.5 (the mean of the middle two), interval the extremes at 6 rounds.
  assert "pfca against se: own work +0.50% [-2.00%, +3.00%] of none's step, paired by round" in report
  assert report.splitlines()[2].endswith('+4.00% [+1.00%, +6.00%]; +10.00%')
  assert report.splitlines()[-1].split() == ['ynn_fusion', '250.0', '250.0', '250.0']
