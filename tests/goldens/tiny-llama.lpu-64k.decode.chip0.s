; sramflow assembly: 152 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [3675]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 2, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 2, "rows": 1, "tokens": 128}, {"batch": 1, "head_dim": 16, "heads": 2, "lse": true, "rows": 1, "tokens": 128}, {"head_dim": 16, "heads": 2, "keep": 1, "rows": 1, "shards": 2}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
chip 0 {
  mem.0 {
    @216 +1 read src=0xaa00/4 out=0
    @217 +1 gather src=0x0/128 b=0 out=1 m=1 k=64 n=64 flags=indirect
    @311 +1 write dst=0xadc0/128 a=1
    @312 +1 read src=0xadc0/128 out=0
    @628 +1 write dst=0xac80/32 a=1
    @754 +1 write dst=0xace0/32 a=0
    @755 +1 write dst=0xacc0/32 a=1
    @756 +1 write dst=0xaca0/32 a=2
    @757 +1 read src=0xac80/128 out=0
    @758 +1 read src=0x2080/128 out=1
    @759 +1 read src=0x21c0/2048 out=3
    @760 +1 read src=0x2a80/2048 out=0
    @761 +1 read src=0x3340/2048 out=1
    @762 +1 read src=0xab40/4 out=4
    @763 +1 read src=0xab40/4 out=5
    @764 +1 read src=0xab40/4 out=6
    @765 +1 read src=0x5c80/2048 out=7
    @766 +1 read src=0xac80/128 out=8
    @767 +1 read src=0x6540/128 out=9
    @768 +1 read src=0x6680/5632 out=10
    @769 +1 read src=0x7d00/5632 out=11
    @770 +1 read src=0x9380/5632 out=12
    @853 +1 write dst=0xaf00/128 a=2
    @854 +1 read src=0xaf00/128 out=2
    @855 +1 read src=0xaf00/128 out=14
    @856 +1 read src=0xaf00/128 out=15
    @968 +1 write dst=0xaf00/32 a=13
    @969 +1 read src=0xaf00/32 out=1
    @988 +1 write dst=0xaf00/32 a=2
    @989 +1 read src=0xaf00/32 out=1
    @1008 +1 write dst=0xaf00/32 a=0
    @1009 +1 read src=0xaf00/32 out=0
    @1010 +1 write dst=0x4c40/32 a=0 b=6 m=1 k=1 stride=32 imm=128 flags=indirect|window
    @1011 +1 read src=0x4c40/4096 out=0
    @1064 +1 write dst=0xaf00/32 a=3
    @1065 +1 read src=0xaf00/32 out=1
    @1066 +1 write dst=0xaf00/32 a=1
    @1084 +1 write dst=0xb040/32 a=2
    @1085 +1 read src=0xb040/32 out=1
    @1086 +1 write dst=0x3c00/32 a=1 b=6 m=1 k=1 stride=32 imm=128 flags=indirect|window
    @1087 +1 read src=0x3c00/4096 out=1
    @1285 +1 write dst=0xaf20/32 a=2
    @1286 +1 read src=0xaf00/64 out=2
    @1421 +1 write dst=0xaf00/64 a=4
    @1422 +1 write dst=0xaf40/8 a=2
    @1423 +1 read src=0xaf00/72 out=0
    @1424 +1 write dst=0xaf00/72 a=0
    @1646 +1 write dst=0xaf48/72 a=0
    @1647 +1 read src=0xaf00/144 out=0
    @1742 +1 write dst=0xaf00/32 a=1
    @1743 +1 read src=0xaf00/32 out=0
    @1857 +1 write dst=0xaf00/128 a=1
    @1858 +1 read src=0xaf00/128 out=0
    @2174 +1 write dst=0xaf00/32 a=1
    @2300 +1 write dst=0xaf60/32 a=0
    @2301 +1 write dst=0xaf40/32 a=1
    @2302 +1 write dst=0xaf20/32 a=2
    @2303 +1 read src=0xaf00/128 out=0
    @2398 +1 write dst=0xaf00/128 a=1
    @2399 +1 read src=0xaf00/128 out=0
    @2400 +1 read src=0xaf00/128 out=2
    @2494 +1 write dst=0xaf00/128 a=1
    @2495 +1 read src=0xaf00/128 out=0
    @2496 +1 read src=0xaf00/128 out=3
    @2609 +1 write dst=0xaf00/88 a=1
    @2610 +1 read src=0xaf00/88 out=1
    @2629 +1 write dst=0xaf00/88 a=0
    @2630 +1 read src=0xaf00/88 out=0
    @2705 +1 write dst=0xaf00/88 a=3
    @2706 +1 read src=0xaf00/88 out=1
    @2801 +1 write dst=0xaf00/88 a=3
    @2802 +1 read src=0xaf00/88 out=0
    @2916 +1 write dst=0xaf00/128 a=1
    @2917 +1 read src=0xaf00/128 out=0
    @3233 +1 write dst=0xaf00/32 a=1
    @3359 +1 write dst=0xaf60/32 a=0
    @3360 +1 write dst=0xaf40/32 a=1
    @3361 +1 write dst=0xaf20/32 a=3
    @3362 +1 read src=0xaf00/128 out=0
    @3457 +1 write dst=0xadc0/128 a=1
    @3458 +1 read src=0xadc0/32 out=0
  }
  mxm.0 {
    @855 +20 mxm a=3 b=2 out=13 m=1 k=64 n=16 flags=last
    @875 +20 mxm a=0 b=14 out=2 m=1 k=64 n=16 flags=last
    @895 +20 mxm a=1 b=15 out=0 m=1 k=64 n=16 flags=last
    @1287 +20 mxm a=1 b=2 out=3 m=2 k=16 n=128 imm=2 flags=last|keys
    @1308 +20 mxm a=0 b=1 out=4 m=2 k=128 n=16 imm=2 flags=last|values
    @1744 +20 mxm a=7 b=0 out=1 m=1 k=16 n=64 flags=last
    @2496 +20 mxm a=10 b=0 out=1 m=1 k=64 n=44 flags=last
    @2516 +20 mxm a=11 b=3 out=0 m=1 k=64 n=44 flags=last
    @2803 +20 mxm a=12 b=0 out=1 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @532 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @533 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @534 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @759 +1 vop.rmsnorm src=-1/256 a=0 b=1 out=2 m=1 n=64 imm=0
    @970 +1 vop.rope src=-1/36 a=1 b=4 out=3 m=1 n=16 imm=1
    @990 +1 vop.rope src=-1/36 a=1 b=5 out=2 m=1 n=16 imm=1
    @1307 +1 vop.softmax a=3 b=6 out=1 m=2 n=128 imm=3
    @1308 +1 vop.softmax a=3 b=6 out=2 m=2 n=128 imm=4
    @1648 +1 vop.combine src=-1/144 a=0 out=1 m=2 n=16 imm=5
    @2078 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @2079 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @2080 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @2304 +1 vop.add src=-1/256 a=8 b=0 out=1 m=1 n=64
    @2400 +1 vop.rmsnorm src=-1/256 a=0 b=9 out=1 m=1 n=64 imm=0
    @2611 +1 vop.silu src=-1/88 a=1 out=3 m=1 n=44
    @2707 +1 vop.mul src=-1/176 a=1 b=0 out=3 m=1 n=44
    @3137 +1 vop.sum src=-1/64 a=0 b=1 out=5 m=1 n=16
    @3138 +1 vop.sum src=-1/64 a=5 b=3 out=0 m=1 n=16
    @3139 +1 vop.sum src=-1/64 a=0 b=4 out=1 m=1 n=16
    @3363 +1 vop.add src=-1/256 a=2 b=0 out=1 m=1 n=64
  }
  c2c.0 {
    @313 +3 send src=-1/32 a=0 peer=1 tag=0 offset=32
    @535 +3 send src=-1/32 a=1 peer=1 tag=3
    @1066 +3 send src=-1/32 a=1 peer=1 tag=4096
    @1424 +6 send src=-1/72 a=0 peer=1 tag=4097
    @1859 +3 send src=-1/32 a=0 peer=1 tag=4098 offset=32
    @2081 +3 send src=-1/32 a=1 peer=1 tag=4101
    @2918 +3 send src=-1/32 a=0 peer=1 tag=4104 offset=32
    @3140 +3 send src=-1/32 a=1 peer=1 tag=4107
  }
  c2c.1 {
    @529 +3 recv dst=-1/32 out=3 peer=1 tag=2
    @751 +3 recv dst=-1/32 out=2 peer=1 tag=5
    @1282 +3 recv dst=-1/32 out=2 peer=1 tag=4096
    @1640 +6 recv dst=-1/72 out=0 peer=1 tag=4097
    @2075 +3 recv dst=-1/32 out=3 peer=1 tag=4100
    @2297 +3 recv dst=-1/32 out=2 peer=1 tag=4103
    @3134 +3 recv dst=-1/32 out=4 peer=1 tag=4106
    @3356 +3 recv dst=-1/32 out=3 peer=1 tag=4109
  }
  c2c.2 {
    @313 +3 send src=-1/32 a=0 peer=2 tag=1 offset=64
    @535 +3 send src=-1/32 a=1 peer=2 tag=4
    @1859 +3 send src=-1/32 a=0 peer=2 tag=4099 offset=64
    @2081 +3 send src=-1/32 a=1 peer=2 tag=4102
    @2918 +3 send src=-1/32 a=0 peer=2 tag=4105 offset=64
    @3140 +3 send src=-1/32 a=1 peer=2 tag=4108
  }
  c2c.3 {
    @529 +3 recv dst=-1/32 out=2 peer=2 tag=1
    @751 +3 recv dst=-1/32 out=1 peer=2 tag=4
    @2075 +3 recv dst=-1/32 out=2 peer=2 tag=4099
    @2297 +3 recv dst=-1/32 out=1 peer=2 tag=4102
    @3134 +3 recv dst=-1/32 out=3 peer=2 tag=4105
    @3356 +3 recv dst=-1/32 out=1 peer=2 tag=4108
  }
  c2c.4 {
    @313 +3 send src=-1/32 a=0 peer=3 tag=2 offset=96
    @535 +3 send src=-1/32 a=1 peer=3 tag=5
    @1859 +3 send src=-1/32 a=0 peer=3 tag=4100 offset=96
    @2081 +3 send src=-1/32 a=1 peer=3 tag=4103
    @2918 +3 send src=-1/32 a=0 peer=3 tag=4106 offset=96
    @3140 +3 send src=-1/32 a=1 peer=3 tag=4109
  }
  c2c.5 {
    @529 +3 recv dst=-1/32 out=1 peer=3 tag=0
    @751 +3 recv dst=-1/32 out=0 peer=3 tag=3
    @2075 +3 recv dst=-1/32 out=1 peer=3 tag=4098
    @2297 +3 recv dst=-1/32 out=0 peer=3 tag=4101
    @3134 +3 recv dst=-1/32 out=1 peer=3 tag=4104
    @3356 +3 recv dst=-1/32 out=0 peer=3 tag=4107
  }
  c2c.6 {
    @3459 +3 send src=-1/32 a=0 peer=4 tag=8192
  }
  sync.0 {
    @0 +216 sync
  }
}
