"""KubeRay manifests' tooling: the serveConfigV2 generator and the local two-node cluster."""
