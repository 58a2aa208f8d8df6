# herder as a Nomad task's entrypoint (the image from Dockerfile).
#
# kill_timeout is Nomad's grace between the kill signal and SIGKILL: above
# herd.toml's shutdown.timeout (20s), with a margin for herder's own exit.
job "herd-example" {
  group "stack" {
    network {
      port "probes" { to = 9090 }
    }

    task "herd" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        image     = "herd-example:latest"
        ports     = ["probes"]
        readonly_rootfs = true
        mount {
          type   = "tmpfs"
          target = "/tmp"
        }
      }

      service {
        name = "herd-example"
        port = "probes"
        check {
          type     = "http"
          path     = "/readyz"
          interval = "5s"
          timeout  = "2s"
        }
      }
    }
  }
}
