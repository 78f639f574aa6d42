"""predcache's Pulumi program as a package: `build(load_config())` declares the stack (see ../__main__.py)."""

from predcache_infra.config import ConfigError, StackConfig, load_config
from predcache_infra.policy import PolicyViolation
from predcache_infra.stack import Deployment, build

__all__ = ["ConfigError", "Deployment", "PolicyViolation", "StackConfig", "build", "load_config"]
