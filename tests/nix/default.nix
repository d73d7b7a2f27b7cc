# The Nix store fixture of tests/nix.rs: a small closure shaped like a
# NixOS system, built without nixpkgs from the host's Debian glibc and zlib
# and the C files here (README.md says what each package is for). As root:
#
#   nix-build --option sandbox false --option build-users-group '' \
#     --option substituters '' tests/nix
#
# builds every package; `-A manifest` builds them all too, into one JSON
# file naming each package's store path, name and version.
let
  system = "x86_64-linux";

  # The package `${pname}-${version}`, built by the shell script `script`
  # in a scratch directory, with the host's /usr/bin and /bin on PATH (a
  # builder's environment is empty). Any failing command fails the build.
  # Sources are copied in before compiling, so their store paths do not
  # end up in the binaries (and in their references).
  package = {
    pname,
    version,
    script,
  }:
    derivation {
      name = "${pname}-${version}";
      inherit system pname version;
      builder = "/bin/sh";
      args = ["-e" "-c" "export PATH=/usr/bin:/bin\n${script}"];
    };

  hostLib = "/lib/x86_64-linux-gnu";
  lib = p: "${p}/lib";

  # The host's loader and C library: what the programs' interpreter and
  # RUNPATH name, and where nixtrace attaches its loader uprobes.
  glibc = package {
    pname = "glibc";
    version = "2.36";
    script = ''
      # The name promises the host's glibc version: check it.
      if ! ${hostLib}/libc.so.6 | grep -q 'release version 2\.36\.$'; then
        echo "the host's glibc is not 2.36:" >&2
        ${hostLib}/libc.so.6 | head -n 1 >&2
        exit 1
      fi
      mkdir -p $out/lib
      cp -L ${hostLib}/ld-linux-x86-64.so.2 ${hostLib}/libc.so.6 $out/lib/
    '';
  };

  # The host's zlib (cp fails if it is not 1.2.13), laid out as nixpkgs
  # lays it out: the soname a symlink to the versioned file.
  zlib = package {
    pname = "zlib";
    version = "1.2.13";
    script = ''
      mkdir -p $out/lib
      cp -L ${hostLib}/libz.so.1.2.13 $out/lib/
      chmod u+w $out/lib/libz.so.1.2.13
      patchelf --set-rpath ${lib glibc} $out/lib/libz.so.1.2.13
      ln -s libz.so.1.2.13 $out/lib/libz.so.1
    '';
  };

  # libgreet.so.1, which needs libz.so.1: two builds of one soname.
  greet = version:
    package {
      pname = "greet";
      inherit version;
      script = ''
        mkdir -p $out/lib
        cp ${./greet.c} greet.c
        cc -shared -fPIC -O1 -Wall -Werror '-DGREET_VERSION="${version}"' \
          -Wl,-soname,libgreet.so.1 -o $out/lib/libgreet.so.1 \
          greet.c ${zlib}/lib/libz.so.1
        patchelf --set-rpath ${lib zlib}:${lib glibc} $out/lib/libgreet.so.1
      '';
    };
  greet1 = greet "1.0";
  greet2 = greet "2.0";

  # Store paths that hold a library nothing here needs, for the programs'
  # RUNPATHs and the wrapper's LD_LIBRARY_PATH, as a wrapped NixOS
  # program's search path holds its siblings' libraries.
  padding = letter:
    package {
      pname = "padding-${letter}";
      version = "1.0";
      script = ''
        mkdir -p $out/lib
        cp ${./padding.c} padding.c
        cc -shared -fPIC -O1 -Wall -Werror -DPADDING_SYMBOL=padding_${letter} \
          -Wl,-soname,libpadding-${letter}.so.1 -o $out/lib/libpadding-${letter}.so.1 \
          padding.c
        patchelf --set-rpath ${lib glibc} $out/lib/libpadding-${letter}.so.1
      '';
    };
  paddings = builtins.listToAttrs (map (letter: {
    name = "padding-${letter}";
    value = padding letter;
  }) ["a" "b" "c" "d" "e" "f" "g" "h"]);

  # bin/${pname}, built from hello.c against `greet` and zlib, run by the
  # store's loader with `runpath` as its RUNPATH.
  program = {
    pname,
    version,
    greet,
    runpath,
  }:
    package {
      inherit pname version;
      script = ''
        mkdir -p $out/bin
        cp ${./hello.c} hello.c
        cc -O1 -Wall -Werror -o $out/bin/${pname} \
          hello.c ${greet}/lib/libgreet.so.1 ${zlib}/lib/libz.so.1
        patchelf --set-interpreter ${glibc}/lib/ld-linux-x86-64.so.2 \
          --set-rpath ${builtins.concatStringsSep ":" runpath} $out/bin/${pname}
      '';
    };

  # The minimal RUNPATH, and its twin with eight useless entries first.
  hello = program {
    pname = "hello";
    version = "1.0";
    greet = greet1;
    runpath = map lib [greet1 zlib glibc];
  };
  hello-padded = program {
    pname = "hello-padded";
    version = "1.0";
    greet = greet1;
    runpath = map lib (builtins.attrValues paddings ++ [greet1 zlib glibc]);
  };
  # The other build of libgreet, with useless entries between the others.
  hola = program {
    pname = "hola";
    version = "2.0";
    greet = greet2;
    runpath = map lib [paddings.padding-a greet2 paddings.padding-b zlib glibc];
  };

  # What makeWrapper makes of hello: bin/hello, a script that prefixes
  # LD_LIBRARY_PATH and PYTHONPATH and execs the real program.
  hello-wrapper = package {
    pname = "hello-wrapper";
    version = "1.0";
    script = ''
      site=$out/lib/python3.11/site-packages
      mkdir -p $out/bin $site
      echo 'GREETING = "hello"' > $site/hello_greeting.py
      cat > $out/bin/hello <<EOF
      #!/bin/sh
      export LD_LIBRARY_PATH='${lib paddings.padding-c}:${lib paddings.padding-d}'\''${LD_LIBRARY_PATH:+':'\$LD_LIBRARY_PATH}
      export PYTHONPATH='$site'\''${PYTHONPATH:+':'\$PYTHONPATH}
      exec ${hello}/bin/hello "\$@"
      EOF
      chmod +x $out/bin/hello
    '';
  };

  packages =
    {inherit glibc zlib greet1 greet2 hello hello-padded hola hello-wrapper;}
    // paddings;

  # attribute → {path, pname, version} of every package, as JSON. Its
  # store path refers to all of them, so its out-link keeps them alive.
  manifest = derivation {
    name = "nixtrace-fixtures";
    inherit system;
    builder = "/bin/sh";
    json = builtins.toJSON (builtins.mapAttrs (_: p: {
        path = "${p}";
        inherit (p) pname version;
      })
      packages);
    args = ["-c" "printf '%s\\n' \"$json\" > $out"];
  };
in
  packages // {inherit manifest;}
