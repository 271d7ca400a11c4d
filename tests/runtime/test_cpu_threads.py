"""Intra-op threads of the AFD job's CPU workers (runtime/afd/main.py): the process's cores
shared among the host's workers, at least one each, unless OMP_NUM_THREADS chose."""

import os

import torch

from step3_trt.runtime.afd.main import cpu_threads


def test_workers_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(1) == cores
    assert cpu_threads(cores) == 1
    assert cpu_threads(4 * cores) == 1  # never 0
    if cores >= 4:
        assert cpu_threads(2) == cores // 2


def test_omp_num_threads_is_the_users_choice(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(64) == torch.get_num_threads()
