; sramflow assembly: 135 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [2984]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 1, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 1, "rows": 1, "tokens": 256}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
chip 0 {
  mem.0 {
    @216 +1 read src=0xca80/4 out=0 val=0xca80 prov=resident
    @217 +1 gather src=0x0/128 b=0 out=1 m=1 k=64 n=64 flags=indirect val=0x0 prov=resident
    @311 +1 write dst=0xce40/128 a=1 val=0x10000000000
    @312 +1 read src=0xce40/128 out=0 val=0x10000000000 prov=mine
    @628 +1 write dst=0xcd00/32 a=1 val=0xcd00
    @754 +1 write dst=0xcd60/32 a=0 val=0xcd00
    @755 +1 write dst=0xcd40/32 a=1 val=0xcd00
    @756 +1 write dst=0xcd20/32 a=2 val=0xcd00
    @757 +1 read src=0xcd00/128 out=0 val=0xcd00 prov=earlier
    @758 +1 read src=0x2080/128 out=1 val=0x2080 prov=resident
    @759 +1 read src=0x21c0/2048 out=3 val=0x21c0 prov=resident
    @760 +1 read src=0x2a80/2048 out=0 val=0x2a80 prov=resident
    @761 +1 read src=0x3340/2048 out=1 val=0x3340 prov=resident
    @762 +1 read src=0xcbc0/4 out=4 val=0xcbc0 prov=resident
    @763 +1 read src=0xcbc0/4 out=5 val=0xcbc0 prov=resident
    @764 +1 read src=0xcbc0/4 out=6 val=0xcbc0 prov=resident
    @765 +1 read src=0x7d00/2048 out=7 val=0x7d00 prov=resident
    @766 +1 read src=0xcd00/128 out=8 val=0xcd00 prov=earlier
    @767 +1 read src=0x85c0/128 out=9 val=0x85c0 prov=resident
    @768 +1 read src=0x8700/5632 out=10 val=0x8700 prov=resident
    @769 +1 read src=0x9d80/5632 out=11 val=0x9d80 prov=resident
    @770 +1 read src=0xb400/5632 out=12 val=0xb400 prov=resident
    @853 +1 write dst=0xcf80/128 a=2 val=0x10000000000
    @854 +1 read src=0xcf80/128 out=2 val=0x10000000000 prov=mine
    @855 +1 read src=0xcf80/128 out=14 val=0x10000000000 prov=mine
    @856 +1 read src=0xcf80/128 out=15 val=0x10000000000 prov=mine
    @968 +1 write dst=0xcf80/32 a=13 val=0x10000000001
    @969 +1 read src=0xcf80/32 out=1 val=0x10000000001 prov=mine
    @988 +1 write dst=0xcf80/32 a=2 val=0x10000000002
    @989 +1 read src=0xcf80/32 out=1 val=0x10000000002 prov=mine
    @1008 +1 write dst=0xcf80/32 a=0 val=0x10000000003
    @1009 +1 read src=0xcf80/32 out=0 val=0x10000000003 prov=mine
    @1010 +1 write dst=0x5c80/32 a=0 b=6 m=1 k=1 stride=32 imm=256 flags=indirect val=0x5c80
    @1011 +1 read src=0x5c80/8192 out=0 val=0x5c80 prov=resident
    @1064 +1 write dst=0xcf80/32 a=3 val=0x10000000004
    @1065 +1 read src=0xcf80/32 out=1 val=0x10000000004 prov=mine
    @1084 +1 write dst=0xcf80/32 a=2 val=0x10000000005
    @1085 +1 read src=0xcf80/32 out=2 val=0x10000000005 prov=mine
    @1086 +1 write dst=0x3c00/32 a=2 b=6 m=1 k=1 stride=32 imm=256 flags=indirect val=0x3c00
    @1087 +1 read src=0x3c00/8192 out=2 val=0x3c00 prov=resident
    @1222 +1 write dst=0xcf80/32 a=2 val=0x10000000006
    @1223 +1 read src=0xcf80/32 out=0 val=0x10000000006 prov=mine
    @1337 +1 write dst=0xcf80/128 a=1 val=0x10000000007
    @1338 +1 read src=0xcf80/128 out=0 val=0x10000000007 prov=mine
    @1654 +1 write dst=0xcf80/32 a=1 val=0x10000000008
    @1780 +1 write dst=0xcfe0/32 a=0 val=0x10000000008
    @1781 +1 write dst=0xcfc0/32 a=1 val=0x10000000008
    @1782 +1 write dst=0xcfa0/32 a=2 val=0x10000000008
    @1783 +1 read src=0xcf80/128 out=0 val=0x10000000008 prov=mine
    @1878 +1 write dst=0xcf80/128 a=1 val=0x10000000009
    @1879 +1 write dst=0xd0c0/128 a=0 val=0x1000000000a
    @1880 +1 read src=0xd0c0/128 out=0 val=0x1000000000a prov=mine
    @1881 +1 read src=0xd0c0/128 out=2 val=0x1000000000a prov=mine
    @1882 +1 read src=0xcf80/128 out=3 val=0x10000000009 prov=mine
    @1994 +1 write dst=0xcf80/88 a=1 val=0x1000000000b
    @1995 +1 read src=0xcf80/88 out=1 val=0x1000000000b prov=mine
    @2014 +1 write dst=0xcf80/88 a=0 val=0x1000000000c
    @2015 +1 read src=0xcf80/88 out=0 val=0x1000000000c prov=mine
    @2090 +1 write dst=0xcf80/88 a=2 val=0x1000000000d
    @2110 +1 write dst=0xcf80/88 a=1 val=0x1000000000e
    @2111 +1 read src=0xcf80/88 out=0 val=0x1000000000e prov=mine
    @2225 +1 write dst=0xcf80/128 a=1 val=0x1000000000f
    @2226 +1 read src=0xcf80/128 out=0 val=0x1000000000f prov=mine
    @2542 +1 write dst=0xcf80/32 a=1 val=0x10000000010
    @2668 +1 write dst=0xcfe0/32 a=0 val=0x10000000010
    @2669 +1 write dst=0xcfc0/32 a=1 val=0x10000000010
    @2670 +1 write dst=0xcfa0/32 a=2 val=0x10000000010
    @2671 +1 read src=0xcf80/128 out=0 val=0x10000000010 prov=mine
    @2766 +1 write dst=0xce40/128 a=1 val=0xce40
    @2767 +1 read src=0xce40/32 out=0 val=0xce40 prov=earlier
  }
  mxm.0 {
    @855 +20 mxm a=3 b=2 out=13 m=1 k=64 n=16 flags=last
    @875 +20 mxm a=0 b=14 out=2 m=1 k=64 n=16 flags=last
    @895 +20 mxm a=1 b=15 out=0 m=1 k=64 n=16 flags=last
    @1088 +20 mxm a=2 b=1 out=3 m=1 k=16 n=256 imm=2 flags=last|keys
    @1109 +20 mxm a=0 b=1 out=2 m=1 k=256 n=16 imm=2 flags=last|values
    @1224 +20 mxm a=7 b=0 out=1 m=1 k=16 n=64 flags=last
    @1881 +20 mxm a=10 b=0 out=1 m=1 k=64 n=44 flags=last
    @1901 +20 mxm a=11 b=2 out=0 m=1 k=64 n=44 flags=last
    @2112 +20 mxm a=12 b=0 out=1 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @532 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @533 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @534 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @759 +1 vop.rmsnorm src=-1/256 a=0 b=1 out=2 m=1 n=64 imm=0 flags=round
    @970 +1 vop.rope src=-1/36 a=1 b=4 out=3 m=1 n=16 imm=1 flags=round
    @990 +1 vop.rope src=-1/36 a=1 b=5 out=2 m=1 n=16 imm=1 flags=round
    @1108 +1 vop.softmax a=3 b=6 out=1 m=1 n=256 imm=3
    @1558 +1 vop.sum src=-1/64 a=0 b=1 out=4 m=1 n=16
    @1559 +1 vop.sum src=-1/64 a=4 b=2 out=0 m=1 n=16
    @1560 +1 vop.sum src=-1/64 a=0 b=3 out=1 m=1 n=16
    @1784 +1 vop.add src=-1/256 a=8 b=0 out=1 m=1 n=64 flags=round
    @1785 +1 vop.rmsnorm src=-1/256 a=1 b=9 out=0 m=1 n=64 imm=0 flags=round
    @1996 +1 vop.silu src=-1/88 a=1 out=2 m=1 n=44 flags=round
    @2016 +1 vop.mul src=-1/176 a=2 b=0 out=1 m=1 n=44 flags=round
    @2446 +1 vop.sum src=-1/64 a=0 b=1 out=5 m=1 n=16
    @2447 +1 vop.sum src=-1/64 a=5 b=2 out=0 m=1 n=16
    @2448 +1 vop.sum src=-1/64 a=0 b=4 out=1 m=1 n=16
    @2672 +1 vop.add src=-1/256 a=3 b=0 out=1 m=1 n=64 flags=round
  }
  c2c.0 {
    @313 +3 send src=-1/32 a=0 peer=1 tag=0 offset=32
    @535 +3 send src=-1/32 a=1 peer=1 tag=3
    @1339 +3 send src=-1/32 a=0 peer=1 tag=4096 offset=32
    @1561 +3 send src=-1/32 a=1 peer=1 tag=4099
    @2227 +3 send src=-1/32 a=0 peer=1 tag=4102 offset=32
    @2449 +3 send src=-1/32 a=1 peer=1 tag=4105
  }
  c2c.1 {
    @529 +3 recv dst=-1/32 out=3 peer=1 tag=2
    @751 +3 recv dst=-1/32 out=2 peer=1 tag=5
    @1555 +3 recv dst=-1/32 out=3 peer=1 tag=4098
    @1777 +3 recv dst=-1/32 out=2 peer=1 tag=4101
    @2443 +3 recv dst=-1/32 out=4 peer=1 tag=4104
    @2665 +3 recv dst=-1/32 out=2 peer=1 tag=4107
  }
  c2c.2 {
    @313 +3 send src=-1/32 a=0 peer=2 tag=1 offset=64
    @535 +3 send src=-1/32 a=1 peer=2 tag=4
    @1339 +3 send src=-1/32 a=0 peer=2 tag=4097 offset=64
    @1561 +3 send src=-1/32 a=1 peer=2 tag=4100
    @2227 +3 send src=-1/32 a=0 peer=2 tag=4103 offset=64
    @2449 +3 send src=-1/32 a=1 peer=2 tag=4106
  }
  c2c.3 {
    @529 +3 recv dst=-1/32 out=2 peer=2 tag=1
    @751 +3 recv dst=-1/32 out=1 peer=2 tag=4
    @1555 +3 recv dst=-1/32 out=2 peer=2 tag=4097
    @1777 +3 recv dst=-1/32 out=1 peer=2 tag=4100
    @2443 +3 recv dst=-1/32 out=2 peer=2 tag=4103
    @2665 +3 recv dst=-1/32 out=1 peer=2 tag=4106
  }
  c2c.4 {
    @313 +3 send src=-1/32 a=0 peer=3 tag=2 offset=96
    @535 +3 send src=-1/32 a=1 peer=3 tag=5
    @1339 +3 send src=-1/32 a=0 peer=3 tag=4098 offset=96
    @1561 +3 send src=-1/32 a=1 peer=3 tag=4101
    @2227 +3 send src=-1/32 a=0 peer=3 tag=4104 offset=96
    @2449 +3 send src=-1/32 a=1 peer=3 tag=4107
  }
  c2c.5 {
    @529 +3 recv dst=-1/32 out=1 peer=3 tag=0
    @751 +3 recv dst=-1/32 out=0 peer=3 tag=3
    @1555 +3 recv dst=-1/32 out=1 peer=3 tag=4096
    @1777 +3 recv dst=-1/32 out=0 peer=3 tag=4099
    @2443 +3 recv dst=-1/32 out=1 peer=3 tag=4102
    @2665 +3 recv dst=-1/32 out=0 peer=3 tag=4105
  }
  c2c.6 {
    @2768 +3 send src=-1/32 a=0 peer=4 tag=8192
  }
  sync.0 {
    @0 +216 sync
  }
}
