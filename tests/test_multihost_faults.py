"""Four processes as four hosts: launched as srun launches them, a lost, a preempted and a stuck process each
end the job as documented (docs/clusters.md), and every rerun resumes to the bit. Two processes: a preemption
notice to one during an evaluation stops both at the same step boundary, once the evaluation has ended.

The jobs are experiments/multihost_faults.py's (the quick start's ResNet-20 on the digits, 4 processes x 2
simulated devices). One slow test runs them as a chain on one workdir, each fault resumed by the next job,
so that the final state, compared with a job never stopped, proves every resume exact at once.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import COMPILE_QUICKLY, load_repo_module

from pfca_jax.cli import cluster
from pfca_jax.errors import UserError
from pfca_jax.train import checkpointing, config_defaults, watchdog

faults = load_repo_module('experiments/multihost_faults.py')
kill_resume = load_repo_module('experiments/kill_resume.py')


def slurm_environment(i: int, processes: int = 4) -> dict:
  """What srun gives task i of a one-node, 4-task job step (the variables JAX's SLURM detection reads)."""
  return {'SLURM_JOB_ID': '4242', 'SLURM_NTASKS': str(processes), 'SLURM_PROCID': str(i), 'SLURM_LOCALID': str(i),
          'SLURM_STEP_NODELIST': 'localhost', 'SLURM_NODELIST': 'localhost', 'SLURM_STEP_NUM_TASKS': str(processes)}


def open_mpi_environment(i: int, processes: int = 4) -> dict:
  """What Open MPI 4's mpirun gives rank i on one node."""
  return {'OMPI_MCA_orte_hnp_uri': '1234.0;tcp://127.0.0.1:5000', 'OMPI_COMM_WORLD_SIZE': str(processes),
          'OMPI_COMM_WORLD_RANK': str(i), 'OMPI_COMM_WORLD_LOCAL_RANK': str(i)}


@pytest.mark.parametrize('environment, launcher', [(slurm_environment, 'Slurm'), (open_mpi_environment, 'Ompi')])
def test_a_launchers_environment_is_found_and_joined_with_no_flags(monkeypatch, environment, launcher):
  for name in list(os.environ):
    if name.startswith(('SLURM_', 'OMPI_', 'TPU_', 'CLOUD_TPU')):
      monkeypatch.delenv(name)
  assert cluster.detected_cluster() is None
  for name, value in environment(2).items():
    monkeypatch.setenv(name, value)
  found = cluster.detected_cluster()
  assert found is not None and found.__name__.startswith(launcher)
  assert (found.get_process_count(), found.get_process_id()) == (4, 2)
  # One task alone (srun -n 1) trains alone: nothing to join.
  for name in ('SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS', 'OMPI_COMM_WORLD_SIZE'):
    if name in os.environ:
      monkeypatch.setenv(name, '1')
  assert not cluster.join('auto', None, None, None, join_timeout_s=1, peer_timeout_s=1)


@pytest.mark.parametrize('field, value', [('peer_timeout_s', 0.0), ('step_timeout_s', -1.0), ('join_timeout_s', 0)])
def test_a_bad_timeout_is_refused_in_one_line_before_joining(field, value):
  config = config_defaults.classification()
  config[field] = value
  with pytest.raises(UserError) as refused:
    with cluster.job(config, mode='on'):  # Would fail to join, were the value not refused first.
      pass
  assert str(refused.value).startswith(f'config.{field}={value!r} must be ') and '\n' not in str(refused.value)


def test_the_last_complete_checkpoint_is_named_without_unfinished_saves(tmp_path):
  assert watchdog.last_checkpoint(None) == 'no checkpoint is complete yet'
  for name in ('4', '12', '8', '16.orbax-checkpoint-tmp-1234'):
    (tmp_path / name).mkdir()
  assert watchdog.last_checkpoint(str(tmp_path)) == f'the last complete checkpoint is step 12 in {tmp_path}'


def wait_for_step(job, step: int, timeout: float = 300) -> float:
  """Seconds from the job's start to process 0's log line of `step` or a later one."""
  assert job.wait(timeout, until=lambda: job.last_step() >= step) and job.last_step() >= step, job.statuses()
  return time.monotonic() - job.start


def latest_checkpoint(workdir) -> int:
  return max(int(name) for name in os.listdir(os.path.join(workdir, 'checkpoints')) if name.isdigit())


_STEP_CLOCK = """
import sys, time
import jax.numpy as jnp
from pfca_jax.train import watchdog
watch = watchdog.start(peer_timeout_s=60, step_timeout_s=0.5)
watch.dispatched(1, jnp.zeros(()))  # The first step: the step clock runs from here.
if sys.argv[1] == 'ended':
  watch.steps_ended()
time.sleep(2.5)  # Five timeouts: what follows a run's last step (results, the others' ends) may be long.
watch.finish(0)
print('finished')
"""


@pytest.mark.parametrize('ended', [True, False])
def test_the_step_clock_stops_for_good_once_the_steps_have_ended(ended):
  # In a process of its own: a stuck verdict ends the process (os._exit), as it ends a job's.
  done = subprocess.run([sys.executable, '-c', _STEP_CLOCK, 'ended' if ended else 'running'], capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  if ended:
    assert done.returncode == 0 and done.stdout.strip() == 'finished', done.stderr[-2000:]
  else:  # The same wait with the clock running is a stuck process: the check above can fail.
    assert done.returncode == watchdog.STUCK_STATUS and 'no training step completed for 0.5 s' in done.stderr


@pytest.mark.slow  # Six jobs of four processes each on 2 cores.
def test_lost_preempted_and_stuck_processes_end_the_job_and_every_rerun_resumes_exactly(tmp_path):
  setup = faults.Setup(str(tmp_path), os.environ['JAX_COMPILATION_CACHE_DIR'], steps=20, checkpoint_every=4,
                       eval_every=10, xla_flags=COMPILE_QUICKLY)
  setup.prepare_data()
  slow_eval = ('--config.step_timeout_s=10',)
  ports = []

  # 1. Launched as srun launches it, with no distributed flags: the 4 processes join as one job. Process 1
  # takes 15 s more over the evaluation of step 10, longer than the 10 s step timeout: a healthy slow evaluation is not a stall.
  ref_dir = str(tmp_path / 'reference')
  job = faults.Job(setup, ref_dir, extra=slow_eval, flags=False,
                   env_of=lambda i: dict(slurm_environment(i), PFCA_JAX_FAULT='1:eval:10:stall:15'))
  ports.append(job.port)
  assert job.wait(setup.run_timeout) and job.statuses() == [0] * 4, [job.error_lines(i) for i in range(4)]
  assert '8 device(s) over 4 process(es)' in job.text(0, 'out')
  results = json.load(open(os.path.join(ref_dir, 'results.json')))
  assert results['sessions'][-1]['process_count'] == 4 and results['sessions'][-1]['device_count'] == 8
  _, ref_state = kill_resume.final_checkpoint(ref_dir)

  # 2. Process 0, which holds the coordination service's client and the marker, is SIGKILLed during step 5.
  workdir = str(tmp_path / 'run')
  job = faults.Job(setup, workdir, env_of=lambda i: {'PFCA_JAX_FAULT': '0:step:5:kill:0.1'})
  ports.append(job.port)
  assert job.wait(setup.run_timeout)
  assert job.statuses()[0] == -signal.SIGKILL
  survivors = faults.judge_survivors(job, 0, bound_s=60)
  assert all(s['ok'] for s in survivors.values()), survivors
  # The checkpoint named is the newest one complete in the workdir (step 4's save may still have been in flight).
  complete = [int(name) for name in os.listdir(os.path.join(workdir, 'checkpoints')) if name.isdigit()]
  named = (f'the last complete checkpoint is step {max(complete)} in {workdir}/checkpoints' if complete
           else 'no checkpoint is complete yet')
  for s in survivors.values():
    assert s['status'] == watchdog.LOST_STATUS
    step = re.match(r'error: at step (\d+), ', s['line'])
    assert step and int(step.group(1)) >= 5, s['line']
    assert s['line'] == (f'error: at step {step.group(1)}, process 0 of 4 was lost (no heartbeat for 30 s, '
                         f'config.peer_timeout_s); {named}; the job ends: rerun the same command on every host to '
                         'resume'), s['line']
  resumed_from = max(complete, default=0)

  # 3. A preemption notice to one process: all four save one checkpoint, at the step they agree on, and exit 143.
  job = faults.Job(setup, workdir)
  ports.append(job.port)
  wait_for_step(job, 6)
  os.kill(job.procs[2].pid, signal.SIGTERM)
  assert job.wait(setup.run_timeout) and job.statuses() == [143] * 4, [job.error_lines(i) for i in range(4)]
  stopped = latest_checkpoint(workdir)
  assert stopped >= 6 and (not resumed_from or f'resuming at step {resumed_from}' in job.text(0, 'out'))
  assert f'checkpoint of step {stopped} saved' in job.text(0, 'out')

  # 4. The notice reaches all four, a little apart.
  job = faults.Job(setup, workdir)
  ports.append(job.port)
  wait_for_step(job, stopped + 1)
  for i in (3, 1, 0, 2):
    os.kill(job.procs[i].pid, signal.SIGTERM)
    time.sleep(0.3)
  assert job.wait(setup.run_timeout) and job.statuses() == [143] * 4, [job.error_lines(i) for i in range(4)]
  stopped_again = latest_checkpoint(workdir)
  assert stopped_again > stopped and f'resuming at step {stopped}' in job.text(0, 'out')

  # 5. Process 2 stops stepping at the second step after the resume, its heartbeat still beating: with a
  # 10 s step timeout every process ends within 10 + 60 s, each in one line, with status 6.
  stall = stopped_again + 2
  assert stall < setup.steps
  job = faults.Job(setup, workdir, extra=slow_eval, env_of=lambda i: {'PFCA_JAX_FAULT': f'2:step:{stall}:stall:600'})
  ports.append(job.port)
  stalled_at = wait_for_step(job, stall - 1)
  assert job.wait(setup.run_timeout)
  assert job.statuses() == [watchdog.STUCK_STATUS] * 4, [job.error_lines(i) for i in range(4)]
  for i in range(4):
    assert job.ended_at[i] - stalled_at < 10 + 60
    lines = job.error_lines(i)
    assert len(lines) == 1 and lines[0].startswith('error: at step ') and not job.noise(i), lines
    assert 'no training step completed for 10 s (config.step_timeout_s)' in lines[0], lines
  assert 'process 2 of 4 is stuck' in job.error_lines(2)[0]

  # 6. The same command again: it finishes, and the state is the reference's to the bit.
  job = faults.Job(setup, workdir)
  ports.append(job.port)
  assert job.wait(setup.run_timeout) and job.statuses() == [0] * 4, [job.error_lines(i) for i in range(4)]
  step, state = kill_resume.final_checkpoint(workdir)
  assert step == setup.steps and kill_resume.differences(ref_state, state) == []
  assert json.load(open(os.path.join(workdir, 'results.json')))['final'] == results['final']
  assert not os.path.exists(os.path.join(workdir, 'damaged_checkpoints'))
  assert not os.path.exists(os.path.join(workdir, 'running.json'))
  # The service helper of the killed process 0 lingered peer_timeout_s + 30 s at most; the others left at once.
  assert [faults.service_helpers(port) for port in ports] == [[]] * len(ports)


@pytest.mark.slow
def test_a_second_job_on_a_live_jobs_workdir_is_refused_in_one_line(tmp_path):
  setup = faults.Setup(str(tmp_path), os.environ['JAX_COMPILATION_CACHE_DIR'], steps=8, processes=1, devices=1,
                       xla_flags=COMPILE_QUICKLY)
  setup.prepare_data()
  workdir = str(tmp_path / 'run')
  # The first job stays at step 2 (alive, not stepping: it printed step 1) until it is killed.
  first = faults.Job(setup, workdir, env_of=lambda i: {'PFCA_JAX_FAULT': '0:step:2:stall:600'})
  wait_for_step(first, 1)
  before = sorted(os.listdir(workdir))
  second = faults.Job(setup, workdir)
  assert second.wait(120) and second.statuses() == [2]
  line = f'error: {workdir} is being trained by another job: process {first.procs[0].pid} on host '
  assert second.error_lines(0)[0].startswith(line) and len(second.error_lines(0)) == 1, second.error_lines(0)
  first.kill()
  assert sorted(os.listdir(workdir)) == before
  # The killed job's marker is stale: its rerun trains.
  third = faults.Job(setup, workdir)
  assert third.wait(300) and third.statuses() == [0], third.error_lines(0)


@pytest.mark.slow  # Two processes training side by side.
def test_a_notice_to_one_process_stops_both_at_one_step_boundary_after_the_evaluation_running_ends(tmp_path):
  # Evaluations at steps 3, 6, ...; checkpoints only at the stop (every 100 steps otherwise).
  setup = faults.Setup(str(tmp_path), os.environ['JAX_COMPILATION_CACHE_DIR'], steps=20, checkpoint_every=100,
                       eval_every=3, processes=2, devices=1, xla_flags=COMPILE_QUICKLY)
  setup.prepare_data()
  workdir = str(tmp_path / 'run')
  # Both processes spend 5 s at the start of the evaluation of step 3: the notice, to process 1 alone, lands in it.
  # A short step timeout: a process left stepping alone (the stop not agreed) ends the job in seconds.
  job = faults.Job(setup, workdir, extra=('--config.step_timeout_s=20',),
                   env_of=lambda i: {'PFCA_JAX_FAULT': 'all:eval:3:stall:5'})
  wait_for_step(job, 3)
  os.kill(job.procs[1].pid, signal.SIGTERM)
  assert job.wait(setup.run_timeout) and job.statuses() == [143] * 2, [job.error_lines(i) for i in range(2)]
  # Both were at step 3's boundary when the notice came: they agree on the next one, 4, and each saves its share of
  # that step's checkpoint (a process stopping at another step would leave the collective save, or a step, waiting).
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert job.text(0, 'out').strip().splitlines()[-1] == (
      f'preemption: checkpoint of step 4 saved in {checkpoints}; rerun the same command to resume')
  assert os.listdir(checkpoints) == ['4']
  assert sorted(os.listdir(os.path.join(checkpoints, '4', 'state', 'array_metadatas'))) == ['process_0', 'process_1']
  # The evaluation the notice came in ran to its end (all 360 test digits), so none is left for the resumed run.
  logged = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [(r['step'], r['eval/test/examples']) for r in logged if 'eval/test/examples' in r] == [(3, 360)]
  assert logged[-1]['step'] == 4
  assert 'pending_eval' not in checkpointing.read_latest_meta(workdir)[1]
  assert not any(job.error_lines(i) or job.noise(i) for i in range(2)), [job.error_lines(i) for i in range(2)]
