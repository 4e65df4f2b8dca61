; sramflow assembly: 123 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [2947]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 1, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 1, "rows": 1, "tokens": 256}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
chip 0 {
  mem.0 {
    @216 +1 read src=0xc940/4 out=0 val=0xc940 prov=resident
    @217 +1 gather src=0x0/128 b=0 out=1 m=1 k=64 n=64 flags=indirect val=0x0 prov=resident
    @311 +1 write dst=0xcd00/128 a=1 val=0x10000000000
    @312 +1 read src=0xcd00/128 out=0 val=0x10000000000 prov=mine
    @628 +1 write dst=0xcbc0/32 a=1 val=0xcbc0
    @754 +1 write dst=0xcc20/32 a=0 val=0xcbc0
    @755 +1 write dst=0xcc00/32 a=1 val=0xcbc0
    @756 +1 write dst=0xcbe0/32 a=2 val=0xcbc0
    @757 +1 read src=0xcbc0/128 out=0 val=0xcbc0 prov=earlier
    @758 +1 read src=0x2080/128 out=1 val=0x2080 prov=resident
    @759 +1 read src=0x21c0/6144 out=3 val=0x21c0 prov=resident
    @760 +1 read src=0xca80/4 out=0 val=0xca80 prov=resident
    @761 +1 read src=0xca80/4 out=1 val=0xca80 prov=resident
    @762 +1 read src=0xca80/4 out=4 val=0xca80 prov=resident
    @763 +1 read src=0x7bc0/2048 out=5 val=0x7bc0 prov=resident
    @764 +1 read src=0xcbc0/128 out=6 val=0xcbc0 prov=earlier
    @765 +1 read src=0x8480/128 out=7 val=0x8480 prov=resident
    @766 +2 read src=0x85c0/11264 out=8 val=0x85c0 prov=resident
    @768 +1 read src=0xb2c0/5632 out=9 val=0xb2c0 prov=resident
    @853 +1 write dst=0xce40/128 a=2 val=0x10000000000
    @854 +1 read src=0xce40/128 out=2 val=0x10000000000 prov=mine
    @968 +1 write dst=0xce40/96 a=10 val=0x10000000001
    @969 +1 read src=0xce40/32 out=2 val=0x10000000001 prov=mine
    @970 +1 read src=0xce60/32 out=10 val=0x10000000001 prov=mine
    @971 +1 read src=0xce80/32 out=2 val=0x10000000001 prov=mine
    @972 +1 write dst=0x5b40/32 a=2 b=4 m=1 k=1 stride=32 imm=256 flags=indirect val=0x5b40
    @973 +1 read src=0x5b40/8192 out=1 val=0x5b40 prov=resident
    @1064 +1 write dst=0xce40/32 a=3 val=0x10000000002
    @1065 +1 write dst=0xcf80/32 a=0 val=0x10000000003
    @1066 +1 read src=0xcf80/32 out=0 val=0x10000000003 prov=mine
    @1067 +1 write dst=0x3ac0/32 a=0 b=4 m=1 k=1 stride=32 imm=256 flags=indirect val=0x3ac0
    @1068 +1 read src=0xce40/32 out=0 val=0x10000000002 prov=mine
    @1069 +1 read src=0x3ac0/8192 out=2 val=0x3ac0 prov=resident
    @1204 +1 write dst=0xce40/32 a=2 val=0x10000000004
    @1205 +1 read src=0xce40/32 out=0 val=0x10000000004 prov=mine
    @1319 +1 write dst=0xce40/128 a=1 val=0x10000000005
    @1320 +1 read src=0xce40/128 out=0 val=0x10000000005 prov=mine
    @1636 +1 write dst=0xce40/32 a=1 val=0x10000000006
    @1762 +1 write dst=0xcea0/32 a=0 val=0x10000000006
    @1763 +1 write dst=0xce80/32 a=1 val=0x10000000006
    @1764 +1 write dst=0xce60/32 a=2 val=0x10000000006
    @1765 +1 read src=0xce40/128 out=0 val=0x10000000006 prov=mine
    @1860 +1 write dst=0xce40/128 a=1 val=0x10000000007
    @1861 +1 write dst=0xcf80/128 a=0 val=0x10000000008
    @1862 +1 read src=0xcf80/128 out=0 val=0x10000000008 prov=mine
    @1863 +1 read src=0xce40/128 out=2 val=0x10000000007 prov=mine
    @1976 +1 write dst=0xce40/176 a=1 val=0x10000000009
    @1977 +1 read src=0xce40/88 out=0 val=0x10000000009 prov=mine
    @1978 +1 read src=0xce98/88 out=3 val=0x10000000009 prov=mine
    @2072 +1 write dst=0xce40/88 a=1 val=0x1000000000a
    @2073 +1 write dst=0xce40/88 a=0 val=0x1000000000b
    @2074 +1 read src=0xce40/88 out=0 val=0x1000000000b prov=mine
    @2188 +1 write dst=0xce40/128 a=1 val=0x1000000000c
    @2189 +1 read src=0xce40/128 out=0 val=0x1000000000c prov=mine
    @2505 +1 write dst=0xce40/32 a=1 val=0x1000000000d
    @2631 +1 write dst=0xcea0/32 a=0 val=0x1000000000d
    @2632 +1 write dst=0xce80/32 a=1 val=0x1000000000d
    @2633 +1 write dst=0xce60/32 a=3 val=0x1000000000d
    @2634 +1 read src=0xce40/128 out=0 val=0x1000000000d prov=mine
    @2729 +1 write dst=0xcd00/128 a=1 val=0xcd00
    @2730 +1 read src=0xcd00/32 out=0 val=0xcd00 prov=earlier
  }
  mxm.0 {
    @855 +20 mxm a=3 b=2 out=10 m=1 k=64 n=48 flags=last
    @1070 +20 mxm a=2 b=0 out=3 m=1 k=16 n=256 imm=2 flags=last|keys
    @1091 +20 mxm a=1 b=0 out=2 m=1 k=256 n=16 imm=2 flags=last|values
    @1206 +20 mxm a=5 b=0 out=1 m=1 k=16 n=64 flags=last
    @1863 +20 mxm a=8 b=0 out=1 m=1 k=64 n=88 flags=last
    @2075 +20 mxm a=9 b=0 out=1 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @532 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @533 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @534 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @759 +1 vop.rmsnorm src=-1/256 a=0 b=1 out=2 m=1 n=64 imm=0 flags=round
    @970 +1 vop.rope src=-1/36 a=2 b=0 out=3 m=1 n=16 imm=1 flags=round
    @971 +1 vop.rope src=-1/36 a=10 b=1 out=0 m=1 n=16 imm=1 flags=round
    @1090 +1 vop.softmax a=3 b=4 out=0 m=1 n=256 imm=3
    @1540 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @1541 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @1542 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @1766 +1 vop.add src=-1/256 a=6 b=0 out=1 m=1 n=64 flags=round
    @1767 +1 vop.rmsnorm src=-1/256 a=1 b=7 out=0 m=1 n=64 imm=0 flags=round
    @1978 +1 vop.silu src=-1/88 a=0 out=1 m=1 n=44 flags=round
    @1979 +1 vop.mul src=-1/176 a=1 b=3 out=0 m=1 n=44 flags=round
    @2409 +1 vop.sum src=-1/64 a=0 b=1 out=5 m=1 n=16
    @2410 +1 vop.sum src=-1/64 a=5 b=3 out=0 m=1 n=16
    @2411 +1 vop.sum src=-1/64 a=0 b=4 out=1 m=1 n=16
    @2635 +1 vop.add src=-1/256 a=2 b=0 out=1 m=1 n=64 flags=round
  }
  c2c.0 {
    @313 +3 send src=-1/32 a=0 peer=1 tag=0 offset=32
    @535 +3 send src=-1/32 a=1 peer=1 tag=3
    @1321 +3 send src=-1/32 a=0 peer=1 tag=4096 offset=32
    @1543 +3 send src=-1/32 a=1 peer=1 tag=4099
    @2190 +3 send src=-1/32 a=0 peer=1 tag=4102 offset=32
    @2412 +3 send src=-1/32 a=1 peer=1 tag=4105
  }
  c2c.1 {
    @529 +3 recv dst=-1/32 out=3 peer=1 tag=2
    @751 +3 recv dst=-1/32 out=2 peer=1 tag=5
    @1537 +3 recv dst=-1/32 out=3 peer=1 tag=4098
    @1759 +3 recv dst=-1/32 out=2 peer=1 tag=4101
    @2406 +3 recv dst=-1/32 out=4 peer=1 tag=4104
    @2628 +3 recv dst=-1/32 out=3 peer=1 tag=4107
  }
  c2c.2 {
    @313 +3 send src=-1/32 a=0 peer=2 tag=1 offset=64
    @535 +3 send src=-1/32 a=1 peer=2 tag=4
    @1321 +3 send src=-1/32 a=0 peer=2 tag=4097 offset=64
    @1543 +3 send src=-1/32 a=1 peer=2 tag=4100
    @2190 +3 send src=-1/32 a=0 peer=2 tag=4103 offset=64
    @2412 +3 send src=-1/32 a=1 peer=2 tag=4106
  }
  c2c.3 {
    @529 +3 recv dst=-1/32 out=2 peer=2 tag=1
    @751 +3 recv dst=-1/32 out=1 peer=2 tag=4
    @1537 +3 recv dst=-1/32 out=2 peer=2 tag=4097
    @1759 +3 recv dst=-1/32 out=1 peer=2 tag=4100
    @2406 +3 recv dst=-1/32 out=3 peer=2 tag=4103
    @2628 +3 recv dst=-1/32 out=1 peer=2 tag=4106
  }
  c2c.4 {
    @313 +3 send src=-1/32 a=0 peer=3 tag=2 offset=96
    @535 +3 send src=-1/32 a=1 peer=3 tag=5
    @1321 +3 send src=-1/32 a=0 peer=3 tag=4098 offset=96
    @1543 +3 send src=-1/32 a=1 peer=3 tag=4101
    @2190 +3 send src=-1/32 a=0 peer=3 tag=4104 offset=96
    @2412 +3 send src=-1/32 a=1 peer=3 tag=4107
  }
  c2c.5 {
    @529 +3 recv dst=-1/32 out=1 peer=3 tag=0
    @751 +3 recv dst=-1/32 out=0 peer=3 tag=3
    @1537 +3 recv dst=-1/32 out=1 peer=3 tag=4096
    @1759 +3 recv dst=-1/32 out=0 peer=3 tag=4099
    @2406 +3 recv dst=-1/32 out=1 peer=3 tag=4102
    @2628 +3 recv dst=-1/32 out=0 peer=3 tag=4105
  }
  c2c.6 {
    @2731 +3 send src=-1/32 a=0 peer=4 tag=8192
  }
  sync.0 {
    @0 +216 sync
  }
}
