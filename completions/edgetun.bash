# bash completion for edgetun and edgetun-go. Install: copy to
# /usr/share/bash-completion/completions/edgetun (and a link named edgetun-go).
_edgetun_interfaces() {
  local f names=()
  for f in /var/run/wireguard/*.sock; do
    [[ -e $f ]] || continue
    f=${f##*/}
    names+=("${f%.sock}")
  done
  printf '%s\n' "${names[@]}"
}

_edgetun() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local commands="up down show syncconf strip genkey pubkey genpsk version demo fleet help"
  local fields="public-key listen-port fwmark peers endpoints allowed-ips latest-handshakes transfer persistent-keepalive"
  if [[ $COMP_CWORD -eq 1 ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$commands --help --version" -- "$cur")
    return
  fi
  case ${COMP_WORDS[1]} in
    up)
      case ${COMP_WORDS[COMP_CWORD - 1]} in
        --log-level) mapfile -t COMPREPLY < <(compgen -W "debug info warn error" -- "$cur") ;;
        -i | --interface | --metrics-listen | --ready-peer) COMPREPLY=() ;;
        *)
          if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "--interface --log-level --metrics-listen --ready-peer --help" -- "$cur")
          else
            mapfile -t COMPREPLY < <(compgen -f -X '!*.conf' -- "$cur")
          fi
          ;;
      esac
      ;;
    down) [[ $COMP_CWORD -eq 2 ]] && mapfile -t COMPREPLY < <(compgen -W "$(_edgetun_interfaces)" -- "$cur") ;;
    show)
      if [[ $COMP_CWORD -eq 2 ]]; then
        mapfile -t COMPREPLY < <(compgen -W "all interfaces $(_edgetun_interfaces) --json" -- "$cur")
      elif [[ $COMP_CWORD -eq 3 ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$fields --json" -- "$cur")
      fi
      ;;
    syncconf)
      if [[ $COMP_CWORD -eq 2 ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_edgetun_interfaces)" -- "$cur")
      else
        mapfile -t COMPREPLY < <(compgen -f -X '!*.conf' -- "$cur")
      fi
      ;;
    strip) mapfile -t COMPREPLY < <(compgen -f -X '!*.conf' -- "$cur") ;;
  esac
}

_edgetun_go() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  mapfile -t COMPREPLY < <(compgen -W "-f --foreground --version --help" -- "$cur")
}

complete -o filenames -F _edgetun edgetun
complete -F _edgetun_go edgetun-go
