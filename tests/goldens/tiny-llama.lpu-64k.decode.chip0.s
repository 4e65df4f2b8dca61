; sramflow assembly: 117 instructions
program decode target "lpu-64k" chips 8 clock_hz 900000000.0 dialect queues
meta {"activations": "f16", "chunk_starts": [[216], [2217]], "chunks": 1, "fn_args": [{"eps": 1e-05}, {"head_dim": 16, "heads": 1, "theta": 10000.0}, {"heads": 1, "kv_heads": 1, "rows": 1}, {"batch": 1, "head_dim": 16, "heads": 1, "rows": 1, "tokens": 256}, {"limit": 256}], "stages": [{"first_chip": 0, "index": 0, "tp": 4}, {"first_chip": 4, "index": 1, "tp": 4}]}
chip 0 {
  mem.0 {
    @216 +1 read src=0xc940/4 out=0 val=0xc940 prov=resident
    @217 +1 gather src=0x0/128 b=0 out=1 m=1 k=64 n=64 flags=indirect val=0x0 prov=resident
    @311 +1 write dst=0xcd00/128 a=1 val=0x10000000000
    @312 +1 read src=0xcd00/128 out=0 val=0x10000000000 prov=mine
    @406 +1 write dst=0xcd00/128 a=0 val=0x10000000001
    @538 +1 write dst=0xce80/128 a=0 val=0x10000000001
    @539 +1 write dst=0xce00/128 a=1 val=0x10000000001
    @540 +1 write dst=0xcd80/128 a=2 val=0x10000000001
    @541 +1 read src=0xcd00/128 out=0 val=0x10000000001 prov=mine
    @542 +1 read src=0xcd80/128 out=1 val=0x10000000001 prov=mine
    @543 +1 read src=0xce00/128 out=3 val=0x10000000001 prov=mine
    @544 +1 read src=0xce80/128 out=1 val=0x10000000001 prov=mine
    @639 +1 write dst=0xcbc0/128 a=2 val=0xcbc0
    @640 +1 read src=0xcbc0/128 out=0 val=0xcbc0 prov=earlier
    @641 +1 read src=0x2080/128 out=1 val=0x2080 prov=resident
    @642 +1 read src=0x21c0/6144 out=3 val=0x21c0 prov=resident
    @643 +1 read src=0xca80/4 out=1 val=0xca80 prov=resident
    @644 +1 read src=0xca80/4 out=4 val=0xca80 prov=resident
    @645 +1 read src=0xca80/4 out=5 val=0xca80 prov=resident
    @646 +1 read src=0x7bc0/2048 out=6 val=0x7bc0 prov=resident
    @647 +1 read src=0xcbc0/128 out=7 val=0xcbc0 prov=earlier
    @648 +1 read src=0x8480/128 out=8 val=0x8480 prov=resident
    @649 +2 read src=0x85c0/11264 out=9 val=0x85c0 prov=resident
    @651 +1 read src=0xb2c0/5632 out=10 val=0xb2c0 prov=resident
    @736 +1 write dst=0xce40/128 a=2 val=0x10000000000
    @756 +1 write dst=0xce40/96 a=0 val=0x10000000001
    @757 +1 read src=0xce40/32 out=0 val=0x10000000001 prov=mine
    @758 +1 read src=0xce60/32 out=3 val=0x10000000001 prov=mine
    @759 +1 read src=0xce80/32 out=1 val=0x10000000001 prov=mine
    @760 +1 write dst=0x5b40/32 a=1 b=5 m=1 k=1 stride=32 imm=256 flags=indirect val=0x5b40
    @761 +1 read src=0x5b40/8192 out=1 val=0x5b40 prov=resident
    @852 +1 write dst=0xce40/32 a=2 val=0x10000000002
    @853 +1 write dst=0xcf80/32 a=0 val=0x10000000003
    @854 +1 read src=0xcf80/32 out=0 val=0x10000000003 prov=mine
    @855 +1 write dst=0x3ac0/32 a=0 b=5 m=1 k=1 stride=32 imm=256 flags=indirect val=0x3ac0
    @856 +1 read src=0xce40/32 out=0 val=0x10000000002 prov=mine
    @857 +1 read src=0x3ac0/8192 out=2 val=0x3ac0 prov=resident
    @993 +1 write dst=0xce40/32 a=0 val=0x10000000004
    @1013 +1 write dst=0xce40/128 a=1 val=0x10000000005
    @1014 +1 read src=0xce40/128 out=0 val=0x10000000005 prov=mine
    @1108 +1 write dst=0xce40/128 a=0 val=0x10000000007
    @1240 +1 write dst=0xcfc0/128 a=0 val=0x10000000007
    @1241 +1 write dst=0xcf40/128 a=1 val=0x10000000007
    @1242 +1 write dst=0xcec0/128 a=2 val=0x10000000007
    @1243 +1 read src=0xce40/128 out=0 val=0x10000000007 prov=mine
    @1244 +1 read src=0xcec0/128 out=1 val=0x10000000007 prov=mine
    @1245 +1 read src=0xcf40/128 out=3 val=0x10000000007 prov=mine
    @1246 +1 read src=0xcfc0/128 out=1 val=0x10000000007 prov=mine
    @1341 +1 write dst=0xce40/128 a=2 val=0x10000000006
    @1342 +1 read src=0xce40/128 out=0 val=0x10000000006 prov=mine
    @1437 +1 write dst=0xce40/128 a=1 val=0x10000000008
    @1438 +1 write dst=0xcf80/128 a=0 val=0x10000000009
    @1439 +1 read src=0xce40/128 out=0 val=0x10000000008 prov=mine
    @1458 +1 write dst=0xce40/176 a=2 val=0x1000000000a
    @1459 +1 read src=0xce40/88 out=1 val=0x1000000000a prov=mine
    @1460 +1 read src=0xce98/88 out=3 val=0x1000000000a prov=mine
    @1554 +1 write dst=0xce40/88 a=2 val=0x1000000000b
    @1555 +1 write dst=0xce40/88 a=1 val=0x1000000000c
    @1575 +1 write dst=0xce40/128 a=3 val=0x1000000000d
    @1576 +1 read src=0xce40/128 out=1 val=0x1000000000d prov=mine
    @1670 +1 write dst=0xce40/128 a=1 val=0x1000000000f
    @1802 +1 write dst=0xcfc0/128 a=1 val=0x1000000000f
    @1803 +1 write dst=0xcf40/128 a=2 val=0x1000000000f
    @1804 +1 write dst=0xcec0/128 a=3 val=0x1000000000f
    @1805 +1 read src=0xce40/128 out=1 val=0x1000000000f prov=mine
    @1806 +1 read src=0xcec0/128 out=2 val=0x1000000000f prov=mine
    @1807 +1 read src=0xcf40/128 out=4 val=0x1000000000f prov=mine
    @1808 +1 read src=0xcfc0/128 out=2 val=0x1000000000f prov=mine
    @1903 +1 write dst=0xce40/128 a=3 val=0x1000000000e
    @1904 +1 read src=0xce40/128 out=1 val=0x1000000000e prov=mine
    @1999 +1 write dst=0xcd00/128 a=2 val=0xcd00
    @2000 +1 read src=0xcd00/32 out=63 val=0xcd00 prov=earlier
  }
  mxm.0 {
    @643 +20 mxm a=3 b=2 out=0 m=1 k=64 n=48 flags=last
    @858 +20 mxm a=2 b=0 out=3 m=1 k=16 n=256 imm=2 flags=last|keys
    @879 +20 mxm a=1 b=0 out=2 m=1 k=256 n=16 imm=2 flags=last|values
    @900 +20 mxm a=6 b=0 out=1 m=1 k=16 n=64 flags=last
    @1345 +20 mxm a=9 b=0 out=2 m=1 k=64 n=88 flags=last
    @1462 +20 mxm a=10 b=1 out=3 m=1 k=44 n=64 flags=last
  }
  vxm.0 {
    @543 +1 vop.sum src=-1/256 a=0 b=1 out=2 m=1 n=64
    @544 +1 vop.sum src=-1/256 a=2 b=3 out=0 m=1 n=64
    @545 +1 vop.sum src=-1/256 a=0 b=1 out=2 m=1 n=64
    @642 +1 vop.rmsnorm src=-1/256 a=0 b=1 out=2 m=1 n=64 imm=0 flags=round
    @758 +1 vop.rope src=-1/36 a=0 b=1 out=2 m=1 n=16 imm=1 flags=round
    @759 +1 vop.rope src=-1/36 a=3 b=4 out=0 m=1 n=16 imm=1 flags=round
    @878 +1 vop.softmax a=3 b=5 out=0 m=1 n=256 imm=3
    @899 +1 vop.copy src=-1/32 a=2 out=0 m=1 n=16 flags=round
    @1245 +1 vop.sum src=-1/256 a=0 b=1 out=2 m=1 n=64
    @1246 +1 vop.sum src=-1/256 a=2 b=3 out=0 m=1 n=64
    @1247 +1 vop.sum src=-1/256 a=0 b=1 out=2 m=1 n=64
    @1343 +1 vop.add src=-1/256 a=7 b=0 out=1 m=1 n=64 flags=round
    @1344 +1 vop.rmsnorm src=-1/256 a=1 b=8 out=0 m=1 n=64 imm=0 flags=round
    @1460 +1 vop.silu src=-1/88 a=1 out=2 m=1 n=44 flags=round
    @1461 +1 vop.mul src=-1/176 a=2 b=3 out=1 m=1 n=44 flags=round
    @1807 +1 vop.sum src=-1/256 a=1 b=2 out=3 m=1 n=64
    @1808 +1 vop.sum src=-1/256 a=3 b=4 out=1 m=1 n=64
    @1809 +1 vop.sum src=-1/256 a=1 b=2 out=3 m=1 n=64
    @1905 +1 vop.add src=-1/256 a=0 b=1 out=2 m=1 n=64 flags=round
  }
  c2c.0 {
    @313 +9 send src=-1/128 a=0 peer=1 tag=0
    @1015 +9 send src=-1/128 a=0 peer=1 tag=4096
    @1577 +9 send src=-1/128 a=1 peer=1 tag=4099
  }
  c2c.1 {
    @529 +9 recv dst=-1/128 out=2 peer=1 tag=2
    @1231 +9 recv dst=-1/128 out=2 peer=1 tag=4098
    @1793 +9 recv dst=-1/128 out=3 peer=1 tag=4101
  }
  c2c.2 {
    @313 +9 send src=-1/128 a=0 peer=2 tag=1
    @1015 +9 send src=-1/128 a=0 peer=2 tag=4097
    @1577 +9 send src=-1/128 a=1 peer=2 tag=4100
  }
  c2c.3 {
    @529 +9 recv dst=-1/128 out=1 peer=2 tag=1
    @1231 +9 recv dst=-1/128 out=1 peer=2 tag=4097
    @1793 +9 recv dst=-1/128 out=2 peer=2 tag=4100
  }
  c2c.4 {
    @313 +9 send src=-1/128 a=0 peer=3 tag=2
    @1015 +9 send src=-1/128 a=0 peer=3 tag=4098
    @1577 +9 send src=-1/128 a=1 peer=3 tag=4101
  }
  c2c.5 {
    @529 +9 recv dst=-1/128 out=0 peer=3 tag=0
    @1231 +9 recv dst=-1/128 out=0 peer=3 tag=4096
    @1793 +9 recv dst=-1/128 out=1 peer=3 tag=4099
  }
  c2c.6 {
    @2001 +3 send src=-1/32 a=63 peer=4 tag=8192
  }
  sync.0 {
    @0 +216 sync
  }
}
