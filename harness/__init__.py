"""The harness that tests and benchmarks share: ports, processes, configs, real services.

Not part of the shipped package. One module per thing a test or a benchmark starts or
writes:

- :mod:`harness.ports`: a free TCP port;
- :mod:`harness.polling`: waiting on a condition or an HTTP endpoint, with a deadline;
- :mod:`harness.processes`: one subprocess with its log, stopped SIGTERM-then-SIGKILL;
- :mod:`harness.federation`: federation configs as data, and the one TOML writer;
- :mod:`harness.gateway`: ``verbund gateway`` as a process, with an admin client;
- :mod:`harness.simengine`: simulated engines (``python -m verbund.simengine``);
- :mod:`harness.demo`: the embedded demo federation (``verbund up``, llama.cpp);
- :mod:`harness.services`: PostgreSQL and Redis servers;
- :mod:`harness.slurm`: a single-node Slurm cluster;
- :mod:`harness.load`: closed-loop chat load, recorded request by request;
- :mod:`harness.netns`, :mod:`harness.tcprelay`: sites behind a WAN delay, TCP faults;
- :mod:`harness.training`: training data and uploaded files for job runs.
"""
