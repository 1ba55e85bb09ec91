{
  "targets": [
    {
      "target_name": "edgetun",
      "conditions": [
        [
          "OS=='linux'",
          {
            "sources": [
              "native/addon.c",
              "native/common.c",
              "native/poll.c",
              "native/tun.c",
              "native/offload.c",
              "native/udp.c",
              "native/aead.c",
              "native/cookie.c",
              "native/lane.c",
              "native/dataplane.c",
              "native/netlink.c",
              "native/x25519.c"
            ]
          },
          { "sources": ["native/unsupported.c"] }
        ]
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "configurations": {
        "Release": {
          "cflags!": ["-O3"],
          "cflags": ["-O2"]
        }
      }
    }
  ]
}
