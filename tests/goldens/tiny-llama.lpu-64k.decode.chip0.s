; sramflow assembly: 120 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [2567]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 1, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 1, "rows": 1, "tokens": 256}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
chip 0 {
  mem.0 {
    @216 +1 read src=0xc940/4 out=0 val=0xc940 prov=resident
    @217 +1 gather src=0x0/128 b=0 out=1 m=1 k=64 n=64 flags=indirect val=0x0 prov=resident
    @218 +1 read src=0x2080/128 out=0 val=0x2080 prov=resident
    @219 +1 read src=0x21c0/6144 out=2 val=0x21c0 prov=resident
    @220 +1 read src=0xca80/4 out=3 val=0xca80 prov=resident
    @221 +1 read src=0xca80/4 out=4 val=0xca80 prov=resident
    @222 +1 read src=0xca80/4 out=5 val=0xca80 prov=resident
    @223 +1 read src=0x7bc0/2048 out=6 val=0x7bc0 prov=resident
    @224 +1 read src=0x8480/128 out=7 val=0x8480 prov=resident
    @225 +2 read src=0x85c0/11264 out=8 val=0x85c0 prov=resident
    @227 +1 read src=0xb2c0/5632 out=9 val=0xb2c0 prov=resident
    @311 +1 write dst=0xcd00/128 a=1 val=0x10000000000
    @312 +1 read src=0xcd00/128 out=1 val=0x10000000000 prov=mine
    @628 +1 write dst=0xcd00/32 a=10 val=0x10000000001
    @754 +1 write dst=0xcd60/32 a=1 val=0x10000000001
    @755 +1 write dst=0xcd40/32 a=10 val=0x10000000001
    @756 +1 write dst=0xcd20/32 a=11 val=0x10000000001
    @757 +1 read src=0xcd00/128 out=1 val=0x10000000001 prov=mine
    @758 +1 read src=0xcd00/128 out=11 val=0x10000000001 prov=mine
    @852 +1 write dst=0xcd00/128 a=10 val=0x10000000002
    @872 +1 write dst=0xcd00/96 a=0 val=0x10000000003
    @873 +1 read src=0xcd00/32 out=0 val=0x10000000003 prov=mine
    @874 +1 read src=0xcd20/32 out=2 val=0x10000000003 prov=mine
    @875 +1 read src=0xcd40/32 out=3 val=0x10000000003 prov=mine
    @876 +1 write dst=0x5b40/32 a=3 b=5 m=1 k=1 stride=32 imm=256 flags=indirect val=0x5b40
    @877 +1 read src=0x5b40/8192 out=2 val=0x5b40 prov=resident
    @968 +1 write dst=0xcd00/32 a=1 val=0x10000000004
    @969 +1 write dst=0xce40/32 a=0 val=0x10000000005
    @970 +1 read src=0xce40/32 out=0 val=0x10000000005 prov=mine
    @971 +1 write dst=0x3ac0/32 a=0 b=5 m=1 k=1 stride=32 imm=256 flags=indirect val=0x3ac0
    @972 +1 read src=0xcd00/32 out=0 val=0x10000000004 prov=mine
    @973 +1 read src=0x3ac0/8192 out=1 val=0x3ac0 prov=resident
    @1109 +1 write dst=0xcd00/32 a=0 val=0x10000000006
    @1129 +1 write dst=0xcd00/128 a=1 val=0x10000000007
    @1130 +1 read src=0xcd00/128 out=0 val=0x10000000007 prov=mine
    @1446 +1 write dst=0xcd00/32 a=1 val=0x10000000008
    @1572 +1 write dst=0xcd60/32 a=0 val=0x10000000008
    @1573 +1 write dst=0xcd40/32 a=1 val=0x10000000008
    @1574 +1 write dst=0xcd20/32 a=2 val=0x10000000008
    @1575 +1 read src=0xcd00/128 out=0 val=0x10000000008 prov=mine
    @1670 +1 write dst=0xcd00/128 a=1 val=0x10000000009
    @1671 +1 write dst=0xce40/128 a=0 val=0x1000000000a
    @1672 +1 read src=0xcd00/128 out=0 val=0x10000000009 prov=mine
    @1691 +1 write dst=0xcd00/176 a=2 val=0x1000000000b
    @1692 +1 read src=0xcd00/88 out=1 val=0x1000000000b prov=mine
    @1693 +1 read src=0xcd58/88 out=3 val=0x1000000000b prov=mine
    @1787 +1 write dst=0xcd00/88 a=2 val=0x1000000000c
    @1788 +1 write dst=0xcd00/88 a=1 val=0x1000000000d
    @1808 +1 write dst=0xcd00/128 a=3 val=0x1000000000e
    @1809 +1 read src=0xcd00/128 out=1 val=0x1000000000e prov=mine
    @2125 +1 write dst=0xcd00/32 a=2 val=0x1000000000f
    @2251 +1 write dst=0xcd60/32 a=1 val=0x1000000000f
    @2252 +1 write dst=0xcd40/32 a=2 val=0x1000000000f
    @2253 +1 write dst=0xcd20/32 a=3 val=0x1000000000f
    @2254 +1 read src=0xcd00/128 out=1 val=0x1000000000f prov=mine
    @2349 +1 write dst=0xcbc0/128 a=2 val=0xcbc0
    @2350 +1 read src=0xcbc0/32 out=0 val=0xcbc0 prov=earlier
  }
  mxm.0 {
    @759 +20 mxm a=2 b=10 out=0 m=1 k=64 n=48 flags=last
    @974 +20 mxm a=1 b=0 out=3 m=1 k=16 n=256 imm=2 flags=last|keys
    @995 +20 mxm a=2 b=0 out=1 m=1 k=256 n=16 imm=2 flags=last|values
    @1016 +20 mxm a=6 b=0 out=1 m=1 k=16 n=64 flags=last
    @1578 +20 mxm a=8 b=0 out=2 m=1 k=64 n=88 flags=last
    @1695 +20 mxm a=9 b=1 out=3 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @532 +1 vop.sum src=-1/64 a=1 b=10 out=13 m=1 n=16
    @533 +1 vop.sum src=-1/64 a=13 b=11 out=1 m=1 n=16
    @534 +1 vop.sum src=-1/64 a=1 b=12 out=10 m=1 n=16
    @758 +1 vop.rmsnorm src=-1/256 a=1 b=0 out=10 m=1 n=64 imm=0 flags=round
    @874 +1 vop.rope src=-1/36 a=0 b=3 out=1 m=1 n=16 imm=1 flags=round
    @875 +1 vop.rope src=-1/36 a=2 b=4 out=0 m=1 n=16 imm=1 flags=round
    @994 +1 vop.softmax a=3 b=5 out=0 m=1 n=256 imm=3
    @1015 +1 vop.copy src=-1/32 a=1 out=0 m=1 n=16 flags=round
    @1350 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @1351 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @1352 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @1576 +1 vop.add src=-1/256 a=11 b=0 out=1 m=1 n=64 flags=round
    @1577 +1 vop.rmsnorm src=-1/256 a=1 b=7 out=0 m=1 n=64 imm=0 flags=round
    @1693 +1 vop.silu src=-1/88 a=1 out=2 m=1 n=44 flags=round
    @1694 +1 vop.mul src=-1/176 a=2 b=3 out=1 m=1 n=44 flags=round
    @2029 +1 vop.sum src=-1/64 a=1 b=2 out=5 m=1 n=16
    @2030 +1 vop.sum src=-1/64 a=5 b=3 out=1 m=1 n=16
    @2031 +1 vop.sum src=-1/64 a=1 b=4 out=2 m=1 n=16
    @2255 +1 vop.add src=-1/256 a=0 b=1 out=2 m=1 n=64 flags=round
  }
  c2c.0 {
    @313 +3 send src=-1/32 a=1 peer=1 tag=0 offset=32
    @535 +3 send src=-1/32 a=10 peer=1 tag=3
    @1131 +3 send src=-1/32 a=0 peer=1 tag=6 offset=32
    @1353 +3 send src=-1/32 a=1 peer=1 tag=9
    @1810 +3 send src=-1/32 a=1 peer=1 tag=12 offset=32
    @2032 +3 send src=-1/32 a=2 peer=1 tag=15
  }
  c2c.1 {
    @529 +3 recv dst=-1/32 out=12 peer=1 tag=2
    @751 +3 recv dst=-1/32 out=11 peer=1 tag=5
    @1347 +3 recv dst=-1/32 out=3 peer=1 tag=8
    @1569 +3 recv dst=-1/32 out=2 peer=1 tag=11
    @2026 +3 recv dst=-1/32 out=4 peer=1 tag=14
    @2248 +3 recv dst=-1/32 out=3 peer=1 tag=17
  }
  c2c.2 {
    @313 +3 send src=-1/32 a=1 peer=2 tag=1 offset=64
    @535 +3 send src=-1/32 a=10 peer=2 tag=4
    @1131 +3 send src=-1/32 a=0 peer=2 tag=7 offset=64
    @1353 +3 send src=-1/32 a=1 peer=2 tag=10
    @1810 +3 send src=-1/32 a=1 peer=2 tag=13 offset=64
    @2032 +3 send src=-1/32 a=2 peer=2 tag=16
  }
  c2c.3 {
    @529 +3 recv dst=-1/32 out=11 peer=2 tag=1
    @751 +3 recv dst=-1/32 out=10 peer=2 tag=4
    @1347 +3 recv dst=-1/32 out=2 peer=2 tag=7
    @1569 +3 recv dst=-1/32 out=1 peer=2 tag=10
    @2026 +3 recv dst=-1/32 out=3 peer=2 tag=13
    @2248 +3 recv dst=-1/32 out=2 peer=2 tag=16
  }
  c2c.4 {
    @313 +3 send src=-1/32 a=1 peer=3 tag=2 offset=96
    @535 +3 send src=-1/32 a=10 peer=3 tag=5
    @1131 +3 send src=-1/32 a=0 peer=3 tag=8 offset=96
    @1353 +3 send src=-1/32 a=1 peer=3 tag=11
    @1810 +3 send src=-1/32 a=1 peer=3 tag=14 offset=96
    @2032 +3 send src=-1/32 a=2 peer=3 tag=17
  }
  c2c.5 {
    @529 +3 recv dst=-1/32 out=10 peer=3 tag=0
    @751 +3 recv dst=-1/32 out=1 peer=3 tag=3
    @1347 +3 recv dst=-1/32 out=1 peer=3 tag=6
    @1569 +3 recv dst=-1/32 out=0 peer=3 tag=9
    @2026 +3 recv dst=-1/32 out=2 peer=3 tag=12
    @2248 +3 recv dst=-1/32 out=1 peer=3 tag=15
  }
  c2c.6 {
    @2351 +3 send src=-1/32 a=0 peer=4 tag=4096
  }
  sync.0 {
    @0 +216 sync
  }
}
