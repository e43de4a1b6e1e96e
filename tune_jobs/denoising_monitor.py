"""Live monitor of a denoising sweep, the seed's four panels (trainables/denoising/monitor.py).

python tune_jobs/denoising_monitor.py          # the newest denoising sweep, every 15 s; --help for the rest
"""

from trainables.denoising.monitor import main

if __name__ == "__main__":
    raise SystemExit(main())
