# The image KubeRay runs for the head, the workers and the training RayJob.
# Ray in the base image must equal the `ray[serve,tune]==X` pin in pyproject.toml and the
# manifests' rayVersion (tests/unit/test_dockerfile.py and test_kuberay.py check both).
FROM rayproject/ray:2.60.0-py311

# The base image's non-root user `ray` is uid 1000, group `users` (gid 100); its conda env in
# /home/ray/anaconda3 is where the project installs, so nothing is installed at run time.
# Numeric ids let Kubernetes check runAsNonRoot.
USER 1000:100
WORKDIR /home/ray/raymlops

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 configs ./configs
COPY --chown=1000:100 deployments ./deployments
COPY --chown=1000:100 training ./training
COPY --chown=1000:100 monitoring ./monitoring
COPY --chown=1000:100 serve_config.yaml ./

# -I: import the installed package, not the sources in the working directory.
RUN pip install --no-cache-dir . \
    && python -I -c "import ray, deployments.app, training; assert ray.__version__ == '2.60.0'"

# Serve HTTP, dashboard, GCS, Ray client, metrics: what KubeRay's Services target.
EXPOSE 8000 8265 6379 10001 8080
