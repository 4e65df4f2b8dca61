; sramflow assembly: 162 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [3696]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 2, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 2, "rows": 1, "tokens": 128}, {"batch": 1, "head_dim": 16, "heads": 2, "lse": true, "rows": 1, "tokens": 128}, {"head_dim": 16, "heads": 2, "keep": 1, "rows": 1, "shards": 2}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
chip 0 {
  mem.0 {
    @216 +1 read src=0xa280/4 out=0 val=0xa280 prov=resident
    @217 +1 gather src=0x0/128 b=0 out=1 m=1 k=64 n=64 flags=indirect val=0x0 prov=resident
    @311 +1 write dst=0xa640/128 a=1 val=0x10000000000
    @312 +1 read src=0xa640/128 out=0 val=0x10000000000 prov=mine
    @628 +1 write dst=0xa500/32 a=1 val=0xa500
    @754 +1 write dst=0xa560/32 a=0 val=0xa500
    @755 +1 write dst=0xa540/32 a=1 val=0xa500
    @756 +1 write dst=0xa520/32 a=2 val=0xa500
    @757 +1 read src=0xa500/128 out=0 val=0xa500 prov=earlier
    @758 +1 read src=0x2080/128 out=1 val=0x2080 prov=resident
    @759 +1 read src=0x21c0/2048 out=3 val=0x21c0 prov=resident
    @760 +1 read src=0x2a80/1024 out=0 val=0x2a80 prov=resident
    @761 +1 read src=0x2f80/1024 out=1 val=0x2f80 prov=resident
    @762 +1 read src=0xa3c0/4 out=4 val=0xa3c0 prov=resident
    @763 +1 read src=0xa3c0/4 out=5 val=0xa3c0 prov=resident
    @764 +1 read src=0xa3c0/4 out=6 val=0xa3c0 prov=resident
    @765 +1 read src=0x5500/2048 out=7 val=0x5500 prov=resident
    @766 +1 read src=0xa500/128 out=8 val=0xa500 prov=earlier
    @767 +1 read src=0x5dc0/128 out=9 val=0x5dc0 prov=resident
    @768 +1 read src=0x5f00/5632 out=10 val=0x5f00 prov=resident
    @769 +1 read src=0x7580/5632 out=11 val=0x7580 prov=resident
    @770 +1 read src=0x8c00/5632 out=12 val=0x8c00 prov=resident
    @853 +1 write dst=0xa780/128 a=2 val=0x10000000000
    @854 +1 read src=0xa780/128 out=2 val=0x10000000000 prov=mine
    @855 +1 read src=0xa780/128 out=14 val=0x10000000000 prov=mine
    @856 +1 read src=0xa780/128 out=15 val=0x10000000000 prov=mine
    @968 +1 write dst=0xa780/32 a=13 val=0x10000000001
    @969 +1 read src=0xa780/32 out=1 val=0x10000000001 prov=mine
    @988 +1 write dst=0xa780/16 a=2 val=0x10000000002
    @989 +1 read src=0xa780/16 out=1 val=0x10000000002 prov=mine
    @990 +1 write dst=0xa780/16 a=1 val=0x10000000003
    @1008 +1 write dst=0xa8c0/16 a=0 val=0x10000000004
    @1009 +1 read src=0xa8c0/16 out=0 val=0x10000000004 prov=mine
    @1010 +1 write dst=0xa8c0/16 a=0 val=0x10000000005
    @1064 +1 write dst=0xaa00/32 a=3 val=0x10000000006
    @1065 +1 read src=0xaa00/32 out=0 val=0x10000000006 prov=mine
    @1066 +1 write dst=0xaa00/32 a=0 val=0x10000000008
    @1208 +1 write dst=0xa790/16 a=0 val=0x10000000003
    @1209 +1 read src=0xa780/32 out=0 val=0x10000000003 prov=mine
    @1228 +1 write dst=0xa8d0/16 a=0 val=0x10000000005
    @1229 +1 read src=0xa8c0/32 out=0 val=0x10000000005 prov=mine
    @1230 +1 write dst=0x44c0/32 a=0 b=6 m=1 k=1 stride=32 imm=128 flags=indirect|window val=0x44c0
    @1231 +1 read src=0x44c0/4096 out=0 val=0x44c0 prov=resident
    @1285 +1 write dst=0xaa20/32 a=2 val=0x10000000008
    @1286 +1 read src=0xaa00/64 out=2 val=0x10000000008 prov=mine
    @1304 +1 write dst=0xa780/32 a=1 val=0x10000000007
    @1305 +1 read src=0xa780/32 out=1 val=0x10000000007 prov=mine
    @1306 +1 write dst=0x3480/32 a=1 b=6 m=1 k=1 stride=32 imm=128 flags=indirect|window val=0x3480
    @1307 +1 read src=0x3480/4096 out=1 val=0x3480 prov=resident
    @1442 +1 write dst=0xa780/64 a=4 val=0x10000000009
    @1443 +1 write dst=0xa7c0/8 a=2 val=0x10000000009
    @1444 +1 read src=0xa780/72 out=0 val=0x10000000009 prov=mine
    @1445 +1 write dst=0xa780/72 a=0 val=0x1000000000a
    @1667 +1 write dst=0xa7c8/72 a=0 val=0x1000000000a
    @1668 +1 read src=0xa780/144 out=0 val=0x1000000000a prov=mine
    @1763 +1 write dst=0xa780/32 a=1 val=0x1000000000b
    @1764 +1 read src=0xa780/32 out=0 val=0x1000000000b prov=mine
    @1878 +1 write dst=0xa780/128 a=1 val=0x1000000000c
    @1879 +1 read src=0xa780/128 out=0 val=0x1000000000c prov=mine
    @2195 +1 write dst=0xa780/32 a=1 val=0x1000000000d
    @2321 +1 write dst=0xa7e0/32 a=0 val=0x1000000000d
    @2322 +1 write dst=0xa7c0/32 a=1 val=0x1000000000d
    @2323 +1 write dst=0xa7a0/32 a=2 val=0x1000000000d
    @2324 +1 read src=0xa780/128 out=0 val=0x1000000000d prov=mine
    @2419 +1 write dst=0xa780/128 a=1 val=0x1000000000e
    @2420 +1 read src=0xa780/128 out=0 val=0x1000000000e prov=mine
    @2421 +1 read src=0xa780/128 out=2 val=0x1000000000e prov=mine
    @2515 +1 write dst=0xa780/128 a=1 val=0x1000000000f
    @2516 +1 read src=0xa780/128 out=0 val=0x1000000000f prov=mine
    @2517 +1 read src=0xa780/128 out=3 val=0x1000000000f prov=mine
    @2630 +1 write dst=0xa780/88 a=1 val=0x10000000010
    @2631 +1 read src=0xa780/88 out=1 val=0x10000000010 prov=mine
    @2650 +1 write dst=0xa780/88 a=0 val=0x10000000011
    @2651 +1 read src=0xa780/88 out=0 val=0x10000000011 prov=mine
    @2726 +1 write dst=0xa780/88 a=3 val=0x10000000012
    @2727 +1 read src=0xa780/88 out=1 val=0x10000000012 prov=mine
    @2822 +1 write dst=0xa780/88 a=3 val=0x10000000013
    @2823 +1 read src=0xa780/88 out=0 val=0x10000000013 prov=mine
    @2937 +1 write dst=0xa780/128 a=1 val=0x10000000014
    @2938 +1 read src=0xa780/128 out=0 val=0x10000000014 prov=mine
    @3254 +1 write dst=0xa780/32 a=1 val=0x10000000015
    @3380 +1 write dst=0xa7e0/32 a=0 val=0x10000000015
    @3381 +1 write dst=0xa7c0/32 a=1 val=0x10000000015
    @3382 +1 write dst=0xa7a0/32 a=3 val=0x10000000015
    @3383 +1 read src=0xa780/128 out=0 val=0x10000000015 prov=mine
    @3478 +1 write dst=0xa640/128 a=1 val=0xa640
    @3479 +1 read src=0xa640/32 out=0 val=0xa640 prov=earlier
  }
  mxm.0 {
    @855 +20 mxm a=3 b=2 out=13 m=1 k=64 n=16 flags=last
    @875 +20 mxm a=0 b=14 out=2 m=1 k=64 n=8 flags=last
    @895 +20 mxm a=1 b=15 out=0 m=1 k=64 n=8 flags=last
    @1308 +20 mxm a=1 b=2 out=3 m=2 k=16 n=128 imm=2 flags=last|keys
    @1329 +20 mxm a=0 b=1 out=4 m=2 k=128 n=16 imm=2 flags=last|values
    @1765 +20 mxm a=7 b=0 out=1 m=1 k=16 n=64 flags=last
    @2517 +20 mxm a=10 b=0 out=1 m=1 k=64 n=44 flags=last
    @2537 +20 mxm a=11 b=3 out=0 m=1 k=64 n=44 flags=last
    @2824 +20 mxm a=12 b=0 out=1 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @532 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @533 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @534 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @759 +1 vop.rmsnorm src=-1/256 a=0 b=1 out=2 m=1 n=64 imm=0
    @970 +1 vop.rope src=-1/36 a=1 b=4 out=3 m=1 n=16 imm=1
    @1210 +1 vop.rope src=-1/36 a=0 b=5 out=1 m=1 n=16 imm=1
    @1328 +1 vop.softmax a=3 b=6 out=1 m=2 n=128 imm=3
    @1329 +1 vop.softmax a=3 b=6 out=2 m=2 n=128 imm=4
    @1669 +1 vop.combine src=-1/144 a=0 out=1 m=2 n=16 imm=5
    @2099 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @2100 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @2101 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @2325 +1 vop.add src=-1/256 a=8 b=0 out=1 m=1 n=64
    @2421 +1 vop.rmsnorm src=-1/256 a=0 b=9 out=1 m=1 n=64 imm=0
    @2632 +1 vop.silu src=-1/88 a=1 out=3 m=1 n=44
    @2728 +1 vop.mul src=-1/176 a=1 b=0 out=3 m=1 n=44
    @3158 +1 vop.sum src=-1/64 a=0 b=1 out=5 m=1 n=16
    @3159 +1 vop.sum src=-1/64 a=5 b=3 out=0 m=1 n=16
    @3160 +1 vop.sum src=-1/64 a=0 b=4 out=1 m=1 n=16
    @3384 +1 vop.add src=-1/256 a=2 b=0 out=1 m=1 n=64
  }
  c2c.0 {
    @313 +3 send src=-1/32 a=0 peer=1 tag=0 offset=32
    @535 +3 send src=-1/32 a=1 peer=1 tag=3
    @990 +2 send src=-1/16 a=1 peer=1 tag=4096
    @1010 +2 send src=-1/16 a=0 peer=1 tag=4097
    @1066 +3 send src=-1/32 a=0 peer=1 tag=4098
    @1445 +6 send src=-1/72 a=0 peer=1 tag=4099
    @1880 +3 send src=-1/32 a=0 peer=1 tag=4100 offset=32
    @2102 +3 send src=-1/32 a=1 peer=1 tag=4103
    @2939 +3 send src=-1/32 a=0 peer=1 tag=4106 offset=32
    @3161 +3 send src=-1/32 a=1 peer=1 tag=4109
  }
  c2c.1 {
    @529 +3 recv dst=-1/32 out=3 peer=1 tag=2
    @751 +3 recv dst=-1/32 out=2 peer=1 tag=5
    @1206 +2 recv dst=-1/16 out=0 peer=1 tag=4096
    @1226 +2 recv dst=-1/16 out=0 peer=1 tag=4097
    @1282 +3 recv dst=-1/32 out=2 peer=1 tag=4098
    @1661 +6 recv dst=-1/72 out=0 peer=1 tag=4099
    @2096 +3 recv dst=-1/32 out=3 peer=1 tag=4102
    @2318 +3 recv dst=-1/32 out=2 peer=1 tag=4105
    @3155 +3 recv dst=-1/32 out=4 peer=1 tag=4108
    @3377 +3 recv dst=-1/32 out=3 peer=1 tag=4111
  }
  c2c.2 {
    @313 +3 send src=-1/32 a=0 peer=2 tag=1 offset=64
    @535 +3 send src=-1/32 a=1 peer=2 tag=4
    @1880 +3 send src=-1/32 a=0 peer=2 tag=4101 offset=64
    @2102 +3 send src=-1/32 a=1 peer=2 tag=4104
    @2939 +3 send src=-1/32 a=0 peer=2 tag=4107 offset=64
    @3161 +3 send src=-1/32 a=1 peer=2 tag=4110
  }
  c2c.3 {
    @529 +3 recv dst=-1/32 out=2 peer=2 tag=1
    @751 +3 recv dst=-1/32 out=1 peer=2 tag=4
    @2096 +3 recv dst=-1/32 out=2 peer=2 tag=4101
    @2318 +3 recv dst=-1/32 out=1 peer=2 tag=4104
    @3155 +3 recv dst=-1/32 out=3 peer=2 tag=4107
    @3377 +3 recv dst=-1/32 out=1 peer=2 tag=4110
  }
  c2c.4 {
    @313 +3 send src=-1/32 a=0 peer=3 tag=2 offset=96
    @535 +3 send src=-1/32 a=1 peer=3 tag=5
    @1880 +3 send src=-1/32 a=0 peer=3 tag=4102 offset=96
    @2102 +3 send src=-1/32 a=1 peer=3 tag=4105
    @2939 +3 send src=-1/32 a=0 peer=3 tag=4108 offset=96
    @3161 +3 send src=-1/32 a=1 peer=3 tag=4111
  }
  c2c.5 {
    @529 +3 recv dst=-1/32 out=1 peer=3 tag=0
    @751 +3 recv dst=-1/32 out=0 peer=3 tag=3
    @2096 +3 recv dst=-1/32 out=1 peer=3 tag=4100
    @2318 +3 recv dst=-1/32 out=0 peer=3 tag=4103
    @3155 +3 recv dst=-1/32 out=1 peer=3 tag=4106
    @3377 +3 recv dst=-1/32 out=0 peer=3 tag=4109
  }
  c2c.6 {
    @3480 +3 send src=-1/32 a=0 peer=4 tag=8192
  }
  sync.0 {
    @0 +216 sync
  }
}
