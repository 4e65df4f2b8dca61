; sramflow assembly: 120 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [2568]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 1, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 1, "rows": 1, "tokens": 256}, {"limit": 256}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
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
    @760 +1 read src=0xca80/4 out=1 val=0xca80 prov=resident
    @761 +1 read src=0xca80/4 out=4 val=0xca80 prov=resident
    @762 +1 read src=0xca80/4 out=5 val=0xca80 prov=resident
    @763 +1 read src=0x7bc0/2048 out=6 val=0x7bc0 prov=resident
    @764 +1 read src=0xcbc0/128 out=7 val=0xcbc0 prov=earlier
    @765 +1 read src=0x8480/128 out=8 val=0x8480 prov=resident
    @766 +2 read src=0x85c0/11264 out=9 val=0x85c0 prov=resident
    @768 +1 read src=0xb2c0/5632 out=10 val=0xb2c0 prov=resident
    @853 +1 write dst=0xce40/128 a=2 val=0x10000000000
    @873 +1 write dst=0xce40/96 a=0 val=0x10000000001
    @874 +1 read src=0xce40/32 out=0 val=0x10000000001 prov=mine
    @875 +1 read src=0xce60/32 out=3 val=0x10000000001 prov=mine
    @876 +1 read src=0xce80/32 out=1 val=0x10000000001 prov=mine
    @877 +1 write dst=0x5b40/32 a=1 b=5 m=1 k=1 stride=32 imm=256 flags=indirect val=0x5b40
    @878 +1 read src=0x5b40/8192 out=1 val=0x5b40 prov=resident
    @969 +1 write dst=0xce40/32 a=2 val=0x10000000002
    @970 +1 write dst=0xcf80/32 a=0 val=0x10000000003
    @971 +1 read src=0xcf80/32 out=0 val=0x10000000003 prov=mine
    @972 +1 write dst=0x3ac0/32 a=0 b=5 m=1 k=1 stride=32 imm=256 flags=indirect val=0x3ac0
    @973 +1 read src=0xce40/32 out=0 val=0x10000000002 prov=mine
    @974 +1 read src=0x3ac0/8192 out=2 val=0x3ac0 prov=resident
    @1110 +1 write dst=0xce40/32 a=0 val=0x10000000004
    @1130 +1 write dst=0xce40/128 a=1 val=0x10000000005
    @1131 +1 read src=0xce40/128 out=0 val=0x10000000005 prov=mine
    @1447 +1 write dst=0xce40/32 a=1 val=0x10000000006
    @1573 +1 write dst=0xcea0/32 a=0 val=0x10000000006
    @1574 +1 write dst=0xce80/32 a=1 val=0x10000000006
    @1575 +1 write dst=0xce60/32 a=2 val=0x10000000006
    @1576 +1 read src=0xce40/128 out=0 val=0x10000000006 prov=mine
    @1671 +1 write dst=0xce40/128 a=1 val=0x10000000007
    @1672 +1 write dst=0xcf80/128 a=0 val=0x10000000008
    @1673 +1 read src=0xce40/128 out=0 val=0x10000000007 prov=mine
    @1692 +1 write dst=0xce40/176 a=2 val=0x10000000009
    @1693 +1 read src=0xce40/88 out=1 val=0x10000000009 prov=mine
    @1694 +1 read src=0xce98/88 out=3 val=0x10000000009 prov=mine
    @1788 +1 write dst=0xce40/88 a=2 val=0x1000000000a
    @1789 +1 write dst=0xce40/88 a=1 val=0x1000000000b
    @1809 +1 write dst=0xce40/128 a=3 val=0x1000000000c
    @1810 +1 read src=0xce40/128 out=1 val=0x1000000000c prov=mine
    @2126 +1 write dst=0xce40/32 a=2 val=0x1000000000d
    @2252 +1 write dst=0xcea0/32 a=1 val=0x1000000000d
    @2253 +1 write dst=0xce80/32 a=2 val=0x1000000000d
    @2254 +1 write dst=0xce60/32 a=3 val=0x1000000000d
    @2255 +1 read src=0xce40/128 out=1 val=0x1000000000d prov=mine
    @2350 +1 write dst=0xcd00/128 a=2 val=0xcd00
    @2351 +1 read src=0xcd00/32 out=63 val=0xcd00 prov=earlier
  }
  mxm.0 {
    @760 +20 mxm a=3 b=2 out=0 m=1 k=64 n=48 flags=last
    @975 +20 mxm a=2 b=0 out=3 m=1 k=16 n=256 imm=2 flags=last|keys
    @996 +20 mxm a=1 b=0 out=2 m=1 k=256 n=16 imm=2 flags=last|values
    @1017 +20 mxm a=6 b=0 out=1 m=1 k=16 n=64 flags=last
    @1579 +20 mxm a=9 b=0 out=2 m=1 k=64 n=88 flags=last
    @1696 +20 mxm a=10 b=1 out=3 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @532 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @533 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @534 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @759 +1 vop.rmsnorm src=-1/256 a=0 b=1 out=2 m=1 n=64 imm=0 flags=round
    @875 +1 vop.rope src=-1/36 a=0 b=1 out=2 m=1 n=16 imm=1 flags=round
    @876 +1 vop.rope src=-1/36 a=3 b=4 out=0 m=1 n=16 imm=1 flags=round
    @995 +1 vop.softmax a=3 b=5 out=0 m=1 n=256 imm=3
    @1016 +1 vop.copy src=-1/32 a=2 out=0 m=1 n=16 flags=round
    @1351 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @1352 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @1353 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @1577 +1 vop.add src=-1/256 a=7 b=0 out=1 m=1 n=64 flags=round
    @1578 +1 vop.rmsnorm src=-1/256 a=1 b=8 out=0 m=1 n=64 imm=0 flags=round
    @1694 +1 vop.silu src=-1/88 a=1 out=2 m=1 n=44 flags=round
    @1695 +1 vop.mul src=-1/176 a=2 b=3 out=1 m=1 n=44 flags=round
    @2030 +1 vop.sum src=-1/64 a=1 b=2 out=5 m=1 n=16
    @2031 +1 vop.sum src=-1/64 a=5 b=3 out=1 m=1 n=16
    @2032 +1 vop.sum src=-1/64 a=1 b=4 out=2 m=1 n=16
    @2256 +1 vop.add src=-1/256 a=0 b=1 out=2 m=1 n=64 flags=round
  }
  c2c.0 {
    @313 +3 send src=-1/32 a=0 peer=1 tag=0 offset=32
    @535 +3 send src=-1/32 a=1 peer=1 tag=3
    @1132 +3 send src=-1/32 a=0 peer=1 tag=4096 offset=32
    @1354 +3 send src=-1/32 a=1 peer=1 tag=4099
    @1811 +3 send src=-1/32 a=1 peer=1 tag=4102 offset=32
    @2033 +3 send src=-1/32 a=2 peer=1 tag=4105
  }
  c2c.1 {
    @529 +3 recv dst=-1/32 out=3 peer=1 tag=2
    @751 +3 recv dst=-1/32 out=2 peer=1 tag=5
    @1348 +3 recv dst=-1/32 out=3 peer=1 tag=4098
    @1570 +3 recv dst=-1/32 out=2 peer=1 tag=4101
    @2027 +3 recv dst=-1/32 out=4 peer=1 tag=4104
    @2249 +3 recv dst=-1/32 out=3 peer=1 tag=4107
  }
  c2c.2 {
    @313 +3 send src=-1/32 a=0 peer=2 tag=1 offset=64
    @535 +3 send src=-1/32 a=1 peer=2 tag=4
    @1132 +3 send src=-1/32 a=0 peer=2 tag=4097 offset=64
    @1354 +3 send src=-1/32 a=1 peer=2 tag=4100
    @1811 +3 send src=-1/32 a=1 peer=2 tag=4103 offset=64
    @2033 +3 send src=-1/32 a=2 peer=2 tag=4106
  }
  c2c.3 {
    @529 +3 recv dst=-1/32 out=2 peer=2 tag=1
    @751 +3 recv dst=-1/32 out=1 peer=2 tag=4
    @1348 +3 recv dst=-1/32 out=2 peer=2 tag=4097
    @1570 +3 recv dst=-1/32 out=1 peer=2 tag=4100
    @2027 +3 recv dst=-1/32 out=3 peer=2 tag=4103
    @2249 +3 recv dst=-1/32 out=2 peer=2 tag=4106
  }
  c2c.4 {
    @313 +3 send src=-1/32 a=0 peer=3 tag=2 offset=96
    @535 +3 send src=-1/32 a=1 peer=3 tag=5
    @1132 +3 send src=-1/32 a=0 peer=3 tag=4098 offset=96
    @1354 +3 send src=-1/32 a=1 peer=3 tag=4101
    @1811 +3 send src=-1/32 a=1 peer=3 tag=4104 offset=96
    @2033 +3 send src=-1/32 a=2 peer=3 tag=4107
  }
  c2c.5 {
    @529 +3 recv dst=-1/32 out=1 peer=3 tag=0
    @751 +3 recv dst=-1/32 out=0 peer=3 tag=3
    @1348 +3 recv dst=-1/32 out=1 peer=3 tag=4096
    @1570 +3 recv dst=-1/32 out=0 peer=3 tag=4099
    @2027 +3 recv dst=-1/32 out=2 peer=3 tag=4102
    @2249 +3 recv dst=-1/32 out=1 peer=3 tag=4105
  }
  c2c.6 {
    @2352 +3 send src=-1/32 a=63 peer=4 tag=8192
  }
  sync.0 {
    @0 +216 sync
  }
}
