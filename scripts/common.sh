# Shared by scripts/demo.sh and scripts/test.sh: install what foodaid needs on Debian.
need_apt() {
  # $1 = command to look for, $2 = Debian package providing it
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "installing $2 (for $1)" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
  fi
}
